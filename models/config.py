"""Model and Hydra-split configuration, read from a Hugging Face `config.json` dict.

`ModelConfig` is the one architecture-neutral view of a checkpoint's config that the model
code builds from: every architecture reads the same fields, and the differences between
Llama, Mistral, Qwen2, OLMo2 and BERT live in the architecture registry
(`expc.models.registry`), not in `if model_type == ...` branches across the code. This
module only describes and parses the fields; the registry, which imports it, picks the
architecture that reads a given `config.json` (`registry.read_config`). Every field is
read through `expc.spec.config_fields.ConfigFields`, so a value of the wrong type or range is
a diagnostic at its line in config.json, never a Python error deep in the model code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from typing import TYPE_CHECKING

import attrs

from expc.spec.config_fields import ConfigFields
from expc.spec.model_shape import shape_from_config

if TYPE_CHECKING:
    import torch

ROPE_TYPES = ("default", "linear", "llama3")


@attrs.frozen(kw_only=True)
class RopeConfig:
    """Rotary position embedding: base `theta`, scaling type and its parameters."""

    theta: float
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def inverse_frequencies(self, head_dim: int) -> torch.Tensor:  # [head_dim // 2] float32
        """Per-pair rotation frequencies, computed exactly as Hugging Face does (float32, CPU).

        torch is imported here, not with the module: reading a config (`expc prune`, which
        only rewrites files) needs no torch, and only building a model computes these."""
        import torch

        steps = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").to(torch.float32)
        inv_freq = 1.0 / (self.theta ** (steps / head_dim))
        if self.rope_type == "linear":
            return inv_freq / self.factor
        if self.rope_type == "llama3":
            return self._llama3_scaled(inv_freq)
        return inv_freq

    def _llama3_scaled(self, inv_freq: torch.Tensor) -> torch.Tensor:
        """Llama 3 scaling: low frequencies divided by `factor`, a smooth ramp in between."""
        import torch

        low_freq_wavelen = self.original_max_position_embeddings / self.low_freq_factor
        high_freq_wavelen = self.original_max_position_embeddings / self.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / self.factor, inv_freq)
        smooth = (self.original_max_position_embeddings / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium, smoothed, scaled)


@attrs.frozen(kw_only=True)
class ModelConfig:
    """What the model code needs from a checkpoint's `config.json`, for every architecture."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_attention_heads: int
    n_kv_heads: int
    head_dim: int
    norm_eps: float
    hidden_act: str
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    rope: RopeConfig | None = None
    # Per layer: attend only to the last `w` positions, or None for full attention.
    sliding_windows: tuple[int | None, ...] = ()
    type_vocab_size: int = 0
    # Gemma 2: scores scaled by `query_pre_attn_scalar ** -0.5` (None: `head_dim ** -0.5`);
    # attention scores and final logits soft-capped to `cap * tanh(x / cap)` (None: never).
    query_pre_attn_scalar: float | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    # Gemma 3: sliding-window layers rotate by their own (local) rope; None: all use `rope`.
    local_rope: RopeConfig | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    raw: Mapping = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def kv_groups(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.n_attention_heads // self.n_kv_heads

    @property
    def attention_scale(self) -> float:
        """What attention scores are multiplied by before the softmax."""
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5


def parse_rope(raw: Mapping, source: str) -> RopeConfig:
    """Both layouts: newer `rope_parameters` and the flat `rope_theta` + `rope_scaling`."""
    fields = ConfigFields(raw=raw, source=source)
    nested = fields.section("rope_parameters")
    if nested is not None and "rope_theta" in nested.raw:
        rope, theta = nested, nested.number("rope_theta")
    else:
        rope = fields.section("rope_scaling") or ConfigFields(raw={}, source=source)
        theta = fields.number("rope_theta", default=10000.0)
    rope_type = rope.word("rope_type", default=rope.word("type", default="default"))
    if rope_type not in ROPE_TYPES:
        raise rope.fail(
            "rope_type", f"unsupported rope type `{rope_type}`", code="model-unsupported", help=(
                f"supported rope types: {', '.join(ROPE_TYPES)}",))
    return RopeConfig(
        theta=theta, rope_type=rope_type, factor=rope.number("factor", default=1.0),
        low_freq_factor=rope.number("low_freq_factor", default=1.0),
        high_freq_factor=rope.number("high_freq_factor", default=4.0),
        original_max_position_embeddings=rope.integer("original_max_position_embeddings",
                                                      default=8192))


def parse_common(raw: Mapping, source: str, **overrides) -> ModelConfig:
    """The fields every architecture shares, type- and range-checked (`shape_from_config`
    reads the sizes exactly as `expc check` does); `overrides` carry an architecture's own
    rules."""
    shape = shape_from_config(raw, source=source)
    fields = ConfigFields(raw=raw, source=source)
    common = dict(
        model_type=shape.model_type,
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        n_layers=shape.n_layers,
        n_attention_heads=shape.n_heads,
        n_kv_heads=shape.n_kv_heads,
        head_dim=shape.head_dim,
        norm_eps=fields.number("rms_norm_eps",
                               default=fields.number("layer_norm_eps", default=1e-6)),
        hidden_act=fields.word("hidden_act", default="silu"),
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=shape.tie_word_embeddings,
        sliding_windows=(None,) * shape.n_layers,
        pad_token_id=fields.token_id("pad_token_id", vocab_size=shape.vocab),
        bos_token_id=fields.token_id("bos_token_id"),  # only recorded: configs of tiny
        eos_token_id=fields.token_id("eos_token_id"),  # test models put them past the vocab
        raw=dict(raw),
    )
    common.update(overrides)
    return ModelConfig(**common)
