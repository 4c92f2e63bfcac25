"""Rotary positions on only the first channels of each head (`partial_rotary_factor`).

GPT-NeoX (Pythia) rotates the first `int(head_dim * factor)` channels of each query and
key head and passes the rest through; Hugging Face computes the rotary frequencies over
those channels only. `PartialRope` is a `RopeConfig` whose tables have that width, so the
model's one `RotaryEmbedding` builds them once per forward as for any rotary model, and
`apply_partial_rotary` rotates the leading channels with them.
"""

from __future__ import annotations

import attrs
import torch

from expc.models.config import RopeConfig
from expc.models.layers import apply_rotary
from expc.spec.config_fields import ConfigFields


@attrs.frozen(kw_only=True)
class PartialRope(RopeConfig):
    """A rope over the first `dims` channels of each head."""

    dims: int

    def inverse_frequencies(self, head_dim: int) -> torch.Tensor:  # [dims // 2] float32
        return super().inverse_frequencies(self.dims)


def partial_rotary_factor(fields: ConfigFields, *, default: float,
                          legacy: str | None = None) -> tuple[ConfigFields, str, float]:
    """Where the factor is written (inside `rope_parameters` / `rope_scaling`, at the top
    level, or under the family's older name `legacy`), under which key, and its value."""
    for key in ("rope_parameters", "rope_scaling"):
        section = fields.section(key)
        if section is not None and "partial_rotary_factor" in section.raw:
            return section, "partial_rotary_factor", section.number("partial_rotary_factor")
    if legacy is not None and "partial_rotary_factor" not in fields.raw and legacy in fields.raw:
        return fields, legacy, fields.number(legacy)
    return fields, "partial_rotary_factor", fields.number("partial_rotary_factor", default=default)


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dims: int
                         ) -> torch.Tensor:
    """Rotate the first `dims` channels of `x [B, S, n, d]` by tables `[B, S, dims]`."""
    return torch.cat((apply_rotary(x[..., :dims], cos, sin), x[..., dims:]), dim=-1)
