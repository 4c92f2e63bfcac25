"""Llama-style decoders: Llama, Mistral (sliding window) and Qwen2 (bias on q/k/v).

All three share one pre-norm block; they differ only in how their `config.json` is read,
which each registers with the architecture registry.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from expc.models import markers
from expc.models.config import ModelConfig, parse_common, parse_rope
from expc.models.sliding_windows import sliding_windows
from expc.models.layers import (
    ForwardContext, GatedMLP, RMSNorm, RotaryAttention, TokenEmbedding, activation,
    unfilled_embedding,
)
from expc.models.registry import Architecture, register
from expc.spec.config_fields import ConfigFields


class PreNormBlock(nn.Module):
    """`x + attn(norm(x))`, then `x + mlp(norm(x))`, with every capture site marked."""

    def __init__(self, cfg: ModelConfig, layer: int, head: int | None):
        super().__init__()
        self.layer, self.head = layer, head
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.self_attn = RotaryAttention(cfg, layer=layer, head=head)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.mlp = GatedMLP(cfg, layer=layer, head=head)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, H]
        layer, head = self.layer, self.head
        x = markers.mark(x, "resid_in", layer, head)
        attn_in = markers.mark(self.input_layernorm(x), "attn_in", layer, head)
        attn_out = markers.mark(self.self_attn(attn_in, ctx), "attn_out", layer, head)
        x = markers.mark(x + attn_out, "resid_mid", layer, head)
        mlp_in = markers.mark(self.post_attention_layernorm(x), "mlp_in", layer, head)
        mlp_out = markers.mark(self.mlp(mlp_in), "mlp_out", layer, head)
        return markers.mark(x + mlp_out, "resid_out", layer, head)


def build_token_embeddings(cfg: ModelConfig) -> nn.Module:
    return unfilled_embedding(cfg.vocab_size, cfg.hidden_size, cls=TokenEmbedding)


def build_rms_final_norm(cfg: ModelConfig) -> nn.Module:
    return RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)


def decoder_config(raw: Mapping, source: str, *, act_key: str = "hidden_act",
                   act_default: str = "silu", **overrides) -> ModelConfig:
    """`parse_common` plus what every rotary decoder needs: rope and a known activation
    (field `act_key`: Gemma's is `hidden_activation`)."""
    act = activation(ConfigFields(raw=raw, source=source), act_key, default=act_default)
    return parse_common(raw, source, rope=parse_rope(raw, source), hidden_act=act, **overrides)


def llama_config(raw: Mapping, source: str) -> ModelConfig:
    fields = ConfigFields(raw=raw, source=source)
    bias = fields.flag("attention_bias")
    return decoder_config(raw, source, qkv_bias=bias, o_bias=bias,
                          mlp_bias=fields.flag("mlp_bias"))


def mistral_config(raw: Mapping, source: str) -> ModelConfig:
    return decoder_config(raw, source, sliding_windows=sliding_windows("mistral", raw, source))


def qwen2_config(raw: Mapping, source: str) -> ModelConfig:
    return decoder_config(raw, source, qkv_bias=True, o_bias=False,
                          sliding_windows=sliding_windows("qwen2", raw, source))


def _decoder(model_type: str, hf_names: tuple[str, ...], config_from_hf) -> Architecture:
    return register(Architecture(
        model_type=model_type, hf_architectures=hf_names, causal=True, uses_rope=True,
        config_from_hf=config_from_hf,
        build_embeddings=build_token_embeddings, build_block=PreNormBlock,
        build_final_norm=build_rms_final_norm,
    ))


LLAMA = _decoder("llama", ("LlamaForCausalLM", "LlamaModel"), llama_config)
MISTRAL = _decoder("mistral", ("MistralForCausalLM", "MistralModel"), mistral_config)
QWEN2 = _decoder("qwen2", ("Qwen2ForCausalLM", "Qwen2Model"), qwen2_config)
