"""Gemma 2 and Gemma 3 (text): sandwich norms, soft-capped attention and logits, scaled embeddings, GeGLU.

Each block is `x + post_attention_layernorm(attn(input_layernorm(x)))`, then
`x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))`: four norms, so
`attn_in` / `mlp_in` are the normed branch inputs and `attn_out` / `mlp_out` the normed
branch outputs added to the residual stream. Every norm multiplies by `1 + weight` (the
checkpoint's weights are kept as stored). Attention scores are scaled by
`query_pre_attn_scalar ** -0.5` and soft-capped (`cap * tanh(s / cap)`) inside the
`markers.attention` leaf, which has no fused kernel for that and so always computes the
softmax explicitly; layers alternate sliding-window and global attention (`layer_types`).
The token embeddings are multiplied by `sqrt(hidden_size)` (rounded to the model's dtype, as
Hugging Face does), and the `lm_head` soft-caps the logits.

Gemma 3 keeps that block and adds QK-norm per head (`1 + weight` norms over `head_dim`,
before rotary) and a second rope: sliding-window layers rotate by the local rope
(`rope_parameters.sliding_attention`, or `rope_local_base_freq`), global layers by
`rope_parameters.full_attention` (or `rope_theta` + `rope_scaling`); its soft-caps default
to off and one layer in `sliding_window_pattern` (6) is global.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from torch import nn

from expc.models import markers
from expc.models.config import ModelConfig, RopeConfig, parse_rope
from expc.models.layers import (
    ForwardContext, GatedMLP, RMSNorm, RotaryAttention, RotaryEmbedding, TokenEmbedding,
    unfilled_embedding,
)
from expc.models.llama import decoder_config
from expc.models.qwen3 import HeadRMSNorm
from expc.models.registry import Architecture, linear_lm_head, register
from expc.models.sliding_windows import sliding_windows
from expc.spec.config_fields import ConfigFields


class GemmaRMSNorm(RMSNorm):
    """RMS norm scaled by `1 + weight`, multiplied in float32 before the cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., size] -> [..., size]
        x32 = x.to(torch.float32)
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.to(torch.float32))).to(x.dtype)


class GemmaHeadRMSNorm(HeadRMSNorm, GemmaRMSNorm):
    """Gemma 3's QK-norm: a `1 + weight` RMS norm of each head of a flat projection."""


class Gemma3Attention(RotaryAttention):
    """Per-head QK-norm, and on sliding-window layers the local rope's own positions."""

    def __init__(self, cfg: ModelConfig, *, layer: int, head: int | None):
        super().__init__(cfg, layer=layer, head=head)
        self.q_norm = GemmaHeadRMSNorm(cfg.head_dim, eps=cfg.norm_eps)
        self.k_norm = GemmaHeadRMSNorm(cfg.head_dim, eps=cfg.norm_eps)
        local = self.window is not None and cfg.local_rope is not None
        self.local_rotary = RotaryEmbedding(attrs.evolve(cfg, rope=cfg.local_rope)) if local else None

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, H]
        if self.local_rotary is not None:
            if ctx.local_cos is None:  # the first sliding layer of the pass; the rest reuse
                ctx.local_cos, ctx.local_sin = self.local_rotary(ctx.position_ids, x.dtype)
            ctx = attrs.evolve(ctx, cos=ctx.local_cos, sin=ctx.local_sin)
        return super().forward(x, ctx)


class ScaledTokenEmbedding(TokenEmbedding):
    """Token embeddings times `sqrt(hidden_size)`, the factor rounded to their dtype."""

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        embedded = super().forward(input_ids, position_ids)  # [B, S, H]
        return embedded * embedded.new_tensor(self.embedding_dim ** 0.5)


class SoftCappedLMHead(nn.Linear):
    """`lm_head` whose logits are soft-capped to `cap * tanh(logits / cap)`."""

    def __init__(self, hidden: int, vocab: int, *, cap: float):
        super().__init__(hidden, vocab, bias=False)
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., H] -> [..., V]
        return torch.tanh(super().forward(x) / self.cap) * self.cap


class Gemma2Block(nn.Module):
    """Pre- and post-norms around attention and the MLP, every capture site marked."""

    attention = RotaryAttention

    def __init__(self, cfg: ModelConfig, layer: int, head: int | None):
        super().__init__()
        self.layer, self.head = layer, head
        norm = lambda: GemmaRMSNorm(cfg.hidden_size, eps=cfg.norm_eps)  # noqa: E731
        self.input_layernorm, self.post_attention_layernorm = norm(), norm()
        self.pre_feedforward_layernorm, self.post_feedforward_layernorm = norm(), norm()
        self.self_attn = self.attention(cfg, layer=layer, head=head)
        self.mlp = GatedMLP(cfg, layer=layer, head=head)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, H]
        layer, head = self.layer, self.head
        x = markers.mark(x, "resid_in", layer, head)
        attn_in = markers.mark(self.input_layernorm(x), "attn_in", layer, head)
        attn = self.post_attention_layernorm(self.self_attn(attn_in, ctx))
        x = markers.mark(x + markers.mark(attn, "attn_out", layer, head), "resid_mid", layer, head)
        mlp_in = markers.mark(self.pre_feedforward_layernorm(x), "mlp_in", layer, head)
        mlp = self.post_feedforward_layernorm(self.mlp(mlp_in))
        return markers.mark(x + markers.mark(mlp, "mlp_out", layer, head), "resid_out", layer, head)


class Gemma3Block(Gemma2Block):
    """Gemma 2's block around `Gemma3Attention`."""

    attention = Gemma3Attention


def build_scaled_embeddings(cfg: ModelConfig) -> nn.Module:
    return unfilled_embedding(cfg.vocab_size, cfg.hidden_size, cls=ScaledTokenEmbedding)


def build_gemma_final_norm(cfg: ModelConfig) -> nn.Module:
    return GemmaRMSNorm(cfg.hidden_size, eps=cfg.norm_eps)


def build_capped_lm_head(cfg: ModelConfig) -> nn.Module:
    if cfg.final_logit_softcap is None:
        return linear_lm_head(cfg)
    return SoftCappedLMHead(cfg.hidden_size, cfg.vocab_size, cap=cfg.final_logit_softcap)


def gemma2_config(raw: Mapping, source: str) -> ModelConfig:
    """Gemma 2's own fields: `hidden_activation`, `query_pre_attn_scalar`, the two soft-caps
    (`null` turns one off) and the sliding layers (`layer_types`, else every even layer)."""
    return _gemma_config(raw, source, model_type="gemma2", attn_softcap=50.0,
                         final_softcap=30.0)


def gemma3_config(raw: Mapping, source: str) -> ModelConfig:
    """Gemma 2's fields with Gemma 3's defaults (no soft-caps, one global layer in
    `sliding_window_pattern`) and its two ropes; bidirectional attention is refused."""
    fields = ConfigFields(raw=raw, source=source)
    if fields.flag("use_bidirectional_attention"):
        raise fields.fail("use_bidirectional_attention", "bidirectional Gemma 3 is not supported",
                          code="model-unsupported")
    return _gemma_config(raw, source, model_type="gemma3_text", attn_softcap=None,
                         final_softcap=None,
                         rope=_gemma3_rope(raw, source, "full_attention", "rope_theta", 1e6),
                         local_rope=_gemma3_rope(raw, source, "sliding_attention",
                                                 "rope_local_base_freq", 1e4))


def _gemma3_rope(raw: Mapping, source: str, layer_type: str, theta_key: str,
                 default_theta: float) -> RopeConfig:
    """One layer type's rope: `rope_parameters[layer_type]`, else the flat keys (the
    scaling in `rope_scaling` belongs to the global layers)."""
    nested = ConfigFields(raw=raw, source=source).section("rope_parameters")
    if nested is not None and layer_type in nested.raw:
        return parse_rope({"rope_parameters": nested.raw[layer_type]}, source)
    flat = {"rope_theta": raw.get(theta_key, default_theta)}
    if layer_type == "full_attention" and raw.get("rope_scaling") is not None:
        flat["rope_scaling"] = raw["rope_scaling"]
    return parse_rope(flat, source)


def _gemma_config(raw: Mapping, source: str, *, model_type: str, attn_softcap: float | None,
                  final_softcap: float | None, **overrides) -> ModelConfig:
    fields = ConfigFields(raw=raw, source=source)
    act_key = "hidden_activation" if "hidden_activation" in raw else "hidden_act"
    bias = fields.flag("attention_bias")
    cfg = decoder_config(
        raw, source, act_key=act_key, act_default="gelu_pytorch_tanh", qkv_bias=bias, o_bias=bias,
        sliding_windows=sliding_windows(model_type, raw, source),
        query_pre_attn_scalar=fields.number("query_pre_attn_scalar", default=256.0),
        attn_logit_softcap=fields.optional_number("attn_logit_softcapping", default=attn_softcap),
        final_logit_softcap=fields.optional_number("final_logit_softcapping",
                                                   default=final_softcap),
    )
    return attrs.evolve(cfg, **overrides)  # Gemma 3's ropes replace the one read for Llama


GEMMA2 = register(Architecture(
    model_type="gemma2", hf_architectures=("Gemma2ForCausalLM", "Gemma2Model"), causal=True,
    uses_rope=True, config_from_hf=gemma2_config,
    build_embeddings=build_scaled_embeddings, build_block=Gemma2Block,
    build_final_norm=build_gemma_final_norm,
    build_lm_head=build_capped_lm_head,
))


GEMMA3 = register(Architecture(
    model_type="gemma3_text", hf_architectures=("Gemma3ForCausalLM", "Gemma3TextModel"),
    causal=True, uses_rope=True, config_from_hf=gemma3_config,
    build_embeddings=build_scaled_embeddings, build_block=Gemma3Block,
    build_final_norm=build_gemma_final_norm,
    build_lm_head=build_capped_lm_head,
))
