"""GPT-2: absolute learned positions, pre-norm LayerNorm blocks, GELU (tanh) MLP, tied head.

Hugging Face's GPT-2 stores its projections as `Conv1D` (weight `[in, out]`, the transpose
of `nn.Linear`'s) and fuses q, k and v into one `c_attn`. We hold Llama's roles
(contracts §1) as plain `nn.Linear`s and cut them from the checkpoint at load time
(`expc.models.checkpoint_names`), so captures and importance metrics address GPT-2 like
any decoder:

    ours                                    GPT-2 checkpoint (optionally under `transformer.`)
    embed_tokens.weight                     wte.weight
    embed_tokens.position_embeddings.weight wpe.weight
    layers.L.input_layernorm                h.L.ln_1
    layers.L.self_attn.q_proj|k_proj|v_proj h.L.attn.c_attn, columns [0:H] | [H:2H] | [2H:3H]
    layers.L.self_attn.o_proj               h.L.attn.c_proj
    layers.L.post_attention_layernorm       h.L.ln_2
    layers.L.mlp.up_proj                    h.L.mlp.c_fc
    layers.L.mlp.down_proj                  h.L.mlp.c_proj
    norm                                    ln_f
    lm_head                                 tied to wte (or `lm_head` when untied)

An importance metric at `self_attn.q_proj` thus sees the query third of `c_attn` only.
The MLP is not gated (no `mlp.gate_proj`), like BERT's; attention is BERT's un-rotated
multi-head attention under the causal mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from expc.models.bert import BertMLP, BidirectionalAttention
from expc.models.config import ModelConfig, parse_common
from expc.models.layers import TokenEmbedding, activation, unfilled_embedding
from expc.models.llama import PreNormBlock
from expc.models.registry import Architecture, register
from expc.spec.config_fields import ConfigFields

class GPT2Embeddings(TokenEmbedding):
    """Token table (`weight`, which the LM head ties) plus learned absolute positions."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg.vocab_size, cfg.hidden_size,
                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.position_embeddings = unfilled_embedding(cfg.max_position_embeddings,
                                                      cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids, position_ids) + self.position_embeddings(position_ids)


class GPT2Block(PreNormBlock):
    """Llama's pre-norm block with LayerNorms, un-rotated attention and an ungated MLP."""

    def __init__(self, cfg: ModelConfig, layer: int, head: int | None):
        super().__init__(cfg, layer, head)
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.self_attn = BidirectionalAttention(cfg, layer=layer, head=head)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.mlp = BertMLP(cfg, layer=layer, head=head)


def gpt2_config(raw: Mapping, source: str) -> ModelConfig:
    """GPT-2's own field names (`n_embd`, ...; see `ArchitectureFacts.config_names`)."""
    fields = ConfigFields(raw=raw, source=source)
    act = activation(fields, "activation_function", default="gelu_new")
    return parse_common(raw, source, hidden_act=act, qkv_bias=True, o_bias=True, mlp_bias=True,
                        norm_eps=fields.number("layer_norm_epsilon", default=1e-5),
                        tie_word_embeddings=fields.flag("tie_word_embeddings", default=True))


def build_final_norm(cfg: ModelConfig) -> nn.Module:
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)


GPT2 = register(Architecture(
    model_type="gpt2", hf_architectures=("GPT2LMHeadModel", "GPT2Model"), causal=True,
    uses_rope=False, config_from_hf=gpt2_config, build_embeddings=GPT2Embeddings,
    build_block=GPT2Block, build_final_norm=build_final_norm,
))
