"""Phi-3: Llama's decoder, stored with fused `qkv_proj` and `gate_up_proj`.

A fused projection is split at load time into Llama's Linear modules — rows
`[q | k | v]` of `self_attn.qkv_proj` become `self_attn.q_proj` / `k_proj` / `v_proj`, rows
`[gate | up]` of `mlp.gate_up_proj` become `mlp.gate_proj` / `up_proj` — through the
checkpoint view below, so the block is Llama's `PreNormBlock` and every module role, site
and importance metric sees a Phi-3 model exactly as it sees Llama (a metric at
`self_attn.k_proj` scores the key rows of `qkv_proj`). The split is exact: a fused matmul
is the concatenation of its row blocks' matmuls.

Rotary: the default rope only; `longrope` (Phi-3's 128k variants) is refused by the rope
parser, and a `partial_rotary_factor` other than 1 (Phi-4-mini) here.
"""

from __future__ import annotations

from collections.abc import Mapping

from expc.models.config import ModelConfig
from expc.models.fused_checkpoint import FusedSplit, split_rows
from expc.models.llama import (
    PreNormBlock, build_rms_final_norm, build_token_embeddings, decoder_checkpoint_keys,
    decoder_config,
)
from expc.models.registry import Architecture, register
from expc.spec.config_fields import ConfigFields


def _partial_rotary_factor(fields: ConfigFields) -> tuple[ConfigFields, float]:
    """Where the factor is written (inside `rope_parameters` / `rope_scaling` or at the top
    level) and its value."""
    for key in ("rope_parameters", "rope_scaling"):
        section = fields.section(key)
        if section is not None and "partial_rotary_factor" in section.raw:
            return section, section.number("partial_rotary_factor")
    return fields, fields.number("partial_rotary_factor", default=1.0)


def phi3_config(raw: Mapping, source: str) -> ModelConfig:
    """Llama's fields without biases; `sliding_window` (when set) on every layer."""
    fields = ConfigFields(raw=raw, source=source)
    where, factor = _partial_rotary_factor(fields)
    if factor != 1.0:
        raise where.fail("partial_rotary_factor", f"unsupported partial_rotary_factor {factor}",
                         code="model-unsupported",
                         help=("phi3 models load with rotary positions on the whole head only",))
    n_layers = fields.integer("num_hidden_layers")
    window = fields.optional_integer("sliding_window", default=None)
    return decoder_config(raw, source, sliding_windows=(window,) * n_layers)


def phi3_checkpoint(checkpoint, cfg: ModelConfig) -> FusedSplit:
    """`checkpoint` with each layer's fused projections also readable under Llama's keys."""
    q, kv = cfg.n_attention_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    inner = cfg.intermediate_size
    parts = {}
    for layer in range(cfg.n_layers):
        for prefix in (f"model.layers.{layer}.", f"layers.{layer}."):
            attn, mlp = f"{prefix}self_attn.", f"{prefix}mlp."
            parts |= split_rows(f"{attn}qkv_proj.weight", {
                f"{attn}q_proj.weight": q, f"{attn}k_proj.weight": kv, f"{attn}v_proj.weight": kv})
            parts |= split_rows(f"{mlp}gate_up_proj.weight", {
                f"{mlp}gate_proj.weight": inner, f"{mlp}up_proj.weight": inner})
    return FusedSplit(checkpoint=checkpoint, parts=parts)


PHI3 = register(Architecture(
    model_type="phi3", hf_architectures=("Phi3ForCausalLM", "Phi3Model"), causal=True,
    uses_rope=True, config_from_hf=phi3_config,
    build_embeddings=build_token_embeddings, build_block=PreNormBlock,
    build_final_norm=build_rms_final_norm, checkpoint_keys=decoder_checkpoint_keys,
    checkpoint_view=phi3_checkpoint,
))
