"""Phi-3: Llama's decoder, stored with fused `qkv_proj` and `gate_up_proj`.

A fused projection is read at load time as Llama's Linear modules — rows `[q | k | v]` of
`self_attn.qkv_proj` are `self_attn.q_proj` / `k_proj` / `v_proj`, rows `[gate | up]` of
`mlp.gate_up_proj` are `mlp.gate_proj` / `up_proj` — each a `CheckpointPart` of the fused
tensor (`expc.models.fused_checkpoint`), so the block is Llama's `PreNormBlock` and every
module role, site and importance metric sees a Phi-3 model exactly as it sees Llama (a
metric at `self_attn.k_proj` scores the key rows of `qkv_proj`). The split is exact: a
fused matmul is the concatenation of its row blocks' matmuls.

Rotary: the default rope only; `longrope` (Phi-3's 128k variants) is refused by the rope
parser, and a `partial_rotary_factor` other than 1 (Phi-4-mini) here.
"""

from __future__ import annotations

from collections.abc import Mapping

from expc.models.config import ModelConfig
from expc.models.llama import (
    PreNormBlock, build_rms_final_norm, build_token_embeddings,
    decoder_config,
)
from expc.models.partial_rotary import partial_rotary_factor
from expc.models.sliding_windows import sliding_windows
from expc.models.registry import Architecture, register
from expc.spec.config_fields import ConfigFields


def phi3_config(raw: Mapping, source: str) -> ModelConfig:
    """Llama's fields without biases; `sliding_window` (when set) on every layer."""
    fields = ConfigFields(raw=raw, source=source)
    where, key, factor = partial_rotary_factor(fields, default=1.0)
    if factor != 1.0:
        raise where.fail(key, f"unsupported partial_rotary_factor {factor}",
                         code="model-unsupported",
                         help=("phi3 models load with rotary positions on the whole head only",))
    return decoder_config(raw, source, sliding_windows=sliding_windows("phi3", raw, source))


PHI3 = register(Architecture(
    model_type="phi3", hf_architectures=("Phi3ForCausalLM", "Phi3Model"), causal=True,
    uses_rope=True, config_from_hf=phi3_config,
    build_embeddings=build_token_embeddings, build_block=PreNormBlock,
    build_final_norm=build_rms_final_norm,
))
