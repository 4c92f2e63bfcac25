"""Model and Hydra-split configuration, read from a Hugging Face `config.json` dict.

`ModelConfig` is the one architecture-neutral view of a checkpoint's config that the model
code builds from: every architecture reads the same fields, and the differences between
Llama, Mistral, Qwen2, OLMo2 and BERT live in the architecture registry
(`expc.models.registry`), not in `if model_type == ...` branches across the code. This
module only describes and parses the fields; the registry, which imports it, picks the
architecture that reads a given `config.json` (`registry.read_config`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import torch

from expc.spec.diagnostics import fail

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
        """Per-pair rotation frequencies, computed exactly as Hugging Face does (float32, CPU)."""
        steps = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").to(torch.float32)
        inv_freq = 1.0 / (self.theta ** (steps / head_dim))
        if self.rope_type == "linear":
            return inv_freq / self.factor
        if self.rope_type == "llama3":
            return self._llama3_scaled(inv_freq)
        return inv_freq

    def _llama3_scaled(self, inv_freq: torch.Tensor) -> torch.Tensor:
        """Llama 3 scaling: low frequencies divided by `factor`, a smooth ramp in between."""
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
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    raw: Mapping = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def kv_groups(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.n_attention_heads // self.n_kv_heads


def _require(raw: Mapping, key: str, source: str):
    if key not in raw:
        raise fail(source, f"config is missing `{key}`", code="model-config")
    return raw[key]


def _token_id(raw: Mapping, key: str) -> int | None:
    value = raw.get(key)
    if isinstance(value, list):  # some configs list several eos ids; the first is canonical
        value = value[0] if value else None
    return value


def parse_rope(raw: Mapping, source: str) -> RopeConfig:
    """Both layouts: newer `rope_parameters` and the flat `rope_theta` + `rope_scaling`."""
    params = raw.get("rope_parameters")
    if isinstance(params, Mapping) and "rope_theta" in params:
        fields = dict(params)
    else:
        fields = dict(raw.get("rope_scaling") or {})
        fields["rope_theta"] = raw.get("rope_theta", 10000.0)
    rope_type = fields.get("rope_type", fields.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise fail(
            source, f"unsupported rope type `{rope_type}`", code="model-unsupported",
            help=(f"supported rope types: {', '.join(ROPE_TYPES)}",),
        )
    known = {f.name for f in attrs.fields(RopeConfig)} - {"theta", "rope_type"}
    extra = {k: fields[k] for k in known if fields.get(k) is not None}
    return RopeConfig(theta=float(fields["rope_theta"]), rope_type=rope_type, **extra)


def parse_common(raw: Mapping, source: str, **overrides) -> ModelConfig:
    """The fields every architecture shares; `overrides` carry an architecture's own rules."""
    hidden = _require(raw, "hidden_size", source)
    n_heads = _require(raw, "num_attention_heads", source)
    n_layers = _require(raw, "num_hidden_layers", source)
    fields = dict(
        model_type=raw["model_type"],
        vocab_size=_require(raw, "vocab_size", source),
        hidden_size=hidden,
        intermediate_size=_require(raw, "intermediate_size", source),
        n_layers=n_layers,
        n_attention_heads=n_heads,
        n_kv_heads=raw.get("num_key_value_heads") or n_heads,
        head_dim=raw.get("head_dim") or hidden // n_heads,
        norm_eps=raw.get("rms_norm_eps", raw.get("layer_norm_eps", 1e-6)),
        hidden_act=raw.get("hidden_act", "silu"),
        max_position_embeddings=raw.get("max_position_embeddings", 2048),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        sliding_windows=(None,) * n_layers,
        pad_token_id=_token_id(raw, "pad_token_id"),
        bos_token_id=_token_id(raw, "bos_token_id"),
        eos_token_id=_token_id(raw, "eos_token_id"),
        raw=dict(raw),
    )
    fields.update(overrides)
    return ModelConfig(**fields)
