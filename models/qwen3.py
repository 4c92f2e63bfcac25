"""Qwen3: Qwen2's decoder with QK-norm per head and no bias on q/k/v.

`self_attn.q_norm` / `k_norm` are RMS norms over each head's `head_dim` (weights
`[head_dim]`), applied before rotary positions; OLMo2's norms span the whole projection
instead. As modules they take and return the flat projection `[B, S, n * head_dim]`, so
they sit where OLMo2's do in `RotaryAttention` and an importance metric at them sees every
head's channels.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch

from expc.models.config import ModelConfig
from expc.models.layers import RMSNorm, RotaryAttention
from expc.models.llama import (
    PreNormBlock, build_rms_final_norm, build_token_embeddings,
    qwen2_config,
)
from expc.models.registry import Architecture, register
from expc.spec.config_fields import ConfigFields


class HeadRMSNorm(RMSNorm):
    """An RMS norm of each `head_dim` slice of a flat `[..., n * head_dim]` projection."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., n*d] -> [..., n*d]
        heads = x.unflatten(-1, (-1, self.weight.shape[0]))  # [..., n, d]
        return super().forward(heads).flatten(-2)


class Qwen3Attention(RotaryAttention):
    """`RotaryAttention` whose QK-norm works per head."""

    def __init__(self, cfg: ModelConfig, *, layer: int, head: int | None):
        super().__init__(cfg, layer=layer, head=head)
        self.q_norm = HeadRMSNorm(cfg.head_dim, eps=cfg.norm_eps)
        self.k_norm = HeadRMSNorm(cfg.head_dim, eps=cfg.norm_eps)


class Qwen3Block(PreNormBlock):
    """Llama's pre-norm block around `Qwen3Attention`."""

    def __init__(self, cfg: ModelConfig, layer: int, head: int | None):
        super().__init__(cfg, layer, head)
        self.self_attn = Qwen3Attention(cfg, layer=layer, head=head)


def qwen3_config(raw: Mapping, source: str) -> ModelConfig:
    """Qwen2's fields (sliding-window layers included); biases only with `attention_bias`."""
    bias = ConfigFields(raw=raw, source=source).flag("attention_bias")
    return attrs.evolve(qwen2_config(raw, source), qkv_bias=bias, o_bias=bias)


QWEN3 = register(Architecture(
    model_type="qwen3", hf_architectures=("Qwen3ForCausalLM", "Qwen3Model"), causal=True,
    uses_rope=True, config_from_hf=qwen3_config,
    build_embeddings=build_token_embeddings, build_block=Qwen3Block,
    build_final_norm=build_rms_final_norm,
))

