"""OLMo2: norms moved after each branch, and RMS norms on the query and key projections.

The block is `x + post_attention_layernorm(attn(x))`, then
`x + post_feedforward_layernorm(mlp(x))`; so `attn_in` and `mlp_in` are the raw residual
stream, and `attn_out` / `mlp_out` are the normed branch outputs that are added to it. The
extra norms are `self_attn.q_norm`, `self_attn.k_norm` and `post_feedforward_layernorm`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from expc.models import markers
from expc.models.config import ModelConfig
from expc.models.layers import ForwardContext, GatedMLP, RMSNorm, RotaryAttention
from expc.models.llama import (
    build_rms_final_norm, build_token_embeddings, decoder_config,
)
from expc.models.registry import Architecture, register
from expc.spec.config_fields import ConfigFields


class Olmo2Block(nn.Module):
    """Post-branch norms and QK-norm, with every capture site marked."""

    def __init__(self, cfg: ModelConfig, layer: int, head: int | None):
        super().__init__()
        self.layer, self.head = layer, head
        self.self_attn = RotaryAttention(cfg, layer=layer, head=head, qk_norm=True)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.mlp = GatedMLP(cfg, layer=layer, head=head)
        self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, H]
        layer, head = self.layer, self.head
        x = markers.mark(x, "resid_in", layer, head)
        attn_in = markers.mark(x, "attn_in", layer, head)
        attn = self.post_attention_layernorm(self.self_attn(attn_in, ctx))
        attn_out = markers.mark(attn, "attn_out", layer, head)
        x = markers.mark(x + attn_out, "resid_mid", layer, head)
        mlp_in = markers.mark(x, "mlp_in", layer, head)
        mlp_out = markers.mark(self.post_feedforward_layernorm(self.mlp(mlp_in)), "mlp_out", layer, head)
        return markers.mark(x + mlp_out, "resid_out", layer, head)


def olmo2_config(raw: Mapping, source: str) -> ModelConfig:
    bias = ConfigFields(raw=raw, source=source).flag("attention_bias")
    return decoder_config(raw, source, qkv_bias=bias, o_bias=bias)


OLMO2 = register(Architecture(
    model_type="olmo2", hf_architectures=("Olmo2ForCausalLM", "Olmo2Model"), causal=True,
    uses_rope=True, config_from_hf=olmo2_config,
    build_embeddings=build_token_embeddings, build_block=Olmo2Block,
    build_final_norm=build_rms_final_norm,
))
