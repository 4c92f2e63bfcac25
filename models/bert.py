"""BERT encoders (BERT, MiniLM, all-MiniLM-L6-v2): absolute positions, post-norm, GELU.

Hugging Face's BERT modules are mapped onto the Llama role names every architecture shares
(contracts §1), so captures and importance metrics address BERT exactly like a decoder:

    ours                                 BERT checkpoint (optionally under `bert.`)
    embed_tokens.word_embeddings         embeddings.word_embeddings
    embed_tokens.position_embeddings     embeddings.position_embeddings
    embed_tokens.token_type_embeddings   embeddings.token_type_embeddings
    embed_tokens.norm                    embeddings.LayerNorm
    layers.L.self_attn.q_proj|k_proj|v_proj
                                         encoder.layer.L.attention.self.query|key|value
    layers.L.self_attn.o_proj            encoder.layer.L.attention.output.dense
    layers.L.post_attention_layernorm    encoder.layer.L.attention.output.LayerNorm
    layers.L.mlp.up_proj                 encoder.layer.L.intermediate.dense
    layers.L.mlp.down_proj               encoder.layer.L.output.dense
    layers.L.post_feedforward_layernorm  encoder.layer.L.output.LayerNorm

BERT normalises *after* each residual add, and has no norm in front of attention (so no
`input_layernorm` and, its MLP not being gated, no `mlp.gate_proj`). Its first LayerNorm
sits between attention and MLP and feeds the MLP, as Llama's `post_attention_layernorm`
does; its second follows the feed-forward add and takes OLMo2's name for a norm after the
MLP, `post_feedforward_layernorm` (the role names `expc check` knows for BERT). So, per
layer: `attn_in` is the block input itself, `resid_mid` = `mlp_in` is the normed stream
after attention, and `resid_out` is the block output after its final LayerNorm, equal to
Hugging Face's `hidden_states[L + 1]`. There is no final norm and no LM head; the pooler
is not loaded. Token types are all 0 (single-segment input).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from expc.models import markers
from expc.models.config import ModelConfig, parse_common
from expc.models.layers import ACTIVATIONS, ForwardContext, unfilled_embedding
from expc.models.registry import Architecture, register
from expc.spec.config_fields import ConfigFields

class BertEmbeddings(nn.Module):
    """Word + absolute position + token type (0) embeddings, then LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = unfilled_embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = unfilled_embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = unfilled_embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        token_types = torch.zeros_like(input_ids)  # [B, S]
        summed = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
                  + self.position_embeddings(position_ids))  # [B, S, H]
        return self.norm(summed)


class BidirectionalAttention(nn.Module):
    """Multi-head attention without a causal mask or rotary positions, biases everywhere."""

    def __init__(self, cfg: ModelConfig, *, layer: int, head: int | None):
        super().__init__()
        self.layer, self.head = layer, head
        self.n_heads, self.head_dim = cfg.n_attention_heads, cfg.head_dim
        self.scale = cfg.head_dim ** -0.5
        inner = self.n_heads * self.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, inner)
        self.k_proj = nn.Linear(cfg.hidden_size, inner)
        self.v_proj = nn.Linear(cfg.hidden_size, inner)
        self.o_proj = nn.Linear(inner, cfg.hidden_size)

    def _heads(self, x: torch.Tensor, site: str) -> torch.Tensor:  # [B, S, n*d] -> [B, n, S, d]
        heads = x.view(x.shape[0], x.shape[1], self.n_heads, self.head_dim)  # [B, S, n, d]
        return markers.mark(heads, site, self.layer, self.head).transpose(1, 2)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, H] -> [B, S, H]
        q = self._heads(self.q_proj(x), "q")  # [B, nH, S, d]
        k = self._heads(self.k_proj(x), "k")  # [B, nH, S, d]
        v = markers.mark(self.v_proj(x), "values", self.layer, self.head)  # [B, S, nH*d]
        out = markers.attention(q, k, self._heads(v, "v"), ctx.masks[None], self.scale,
                                self.layer, self.head)  # [B, nH, S, d]
        z = markers.mark(out.transpose(1, 2), "z", self.layer, self.head)  # [B, S, nH, d]
        return self.o_proj(z.reshape(x.shape[0], x.shape[1], self.n_heads * self.head_dim))


class BertMLP(nn.Module):
    """`down_proj(act(up_proj(x)))`: BERT's intermediate and output dense layers; the
    `mlp_post` marker sees the neurons after the activation."""

    def __init__(self, cfg: ModelConfig, *, layer: int, head: int | None):
        super().__init__()
        self.layer, self.head = layer, head
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, H] -> [B, S, H]
        post = markers.mark(self.act(self.up_proj(x)), "mlp_post", self.layer, self.head)
        return self.down_proj(post)  # [B, S, I] -> [B, S, H]


class BertBlock(nn.Module):
    """`norm(x + attn(x))`, then `norm(x + mlp(x))`, with every capture site marked."""

    def __init__(self, cfg: ModelConfig, layer: int, head: int | None):
        super().__init__()
        self.layer, self.head = layer, head
        self.self_attn = BidirectionalAttention(cfg, layer=layer, head=head)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.mlp = BertMLP(cfg, layer=layer, head=head)
        self.post_feedforward_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, H]
        layer, head = self.layer, self.head
        x = markers.mark(x, "resid_in", layer, head)
        attn_in = markers.mark(x, "attn_in", layer, head)
        attn_out = markers.mark(self.self_attn(attn_in, ctx), "attn_out", layer, head)
        x = markers.mark(self.post_attention_layernorm(x + attn_out), "resid_mid", layer, head)
        mlp_in = markers.mark(x, "mlp_in", layer, head)
        mlp_out = markers.mark(self.mlp(mlp_in), "mlp_out", layer, head)
        return markers.mark(self.post_feedforward_layernorm(x + mlp_out), "resid_out", layer, head)


def bert_config(raw: Mapping, source: str) -> ModelConfig:
    """BERT's config.json: absolute positions only, an activation we implement."""
    fields = ConfigFields(raw=raw, source=source)
    positions = fields.word("position_embedding_type", default="absolute")
    if positions != "absolute":
        raise fields.fail(
            "position_embedding_type",
            f"BERT with `position_embedding_type` = `{positions}` is not supported",
            code="model-unsupported", help=("supported: absolute",))
    act = fields.word("hidden_act", default="gelu")
    if act not in ACTIVATIONS:
        raise fields.fail(
            "hidden_act", f"unsupported `hidden_act` `{act}`", code="model-unsupported",
            help=(f"supported activations: {', '.join(ACTIVATIONS)}",))
    return parse_common(raw, source, hidden_act=act, qkv_bias=True, o_bias=True, mlp_bias=True,
                        norm_eps=fields.number("layer_norm_eps", default=1e-12),
                        type_vocab_size=fields.integer("type_vocab_size", default=2))


def build_final_norm(cfg: ModelConfig) -> nn.Module:
    return nn.Identity()  # every BERT block already ends in a LayerNorm


BERT = register(Architecture(
    model_type="bert", hf_architectures=("BertModel", "BertForMaskedLM", "BertForPreTraining"),
    causal=False, uses_rope=False, config_from_hf=bert_config,
    build_embeddings=BertEmbeddings, build_block=BertBlock, build_final_norm=build_final_norm,
))
