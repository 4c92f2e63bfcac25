"""A checkpoint seen with its fused projections split into Llama's separate ones.

Phi-3 stores `qkv_proj` and `gate_up_proj` as one tensor each; expc builds them as
Llama's `q_proj`/`k_proj`/`v_proj` and `gate_proj`/`up_proj` so every module role, site
and importance metric means what it means for Llama. `FusedSplit` presents such a
checkpoint to the loader under the split keys: each split key is a row range of its fused
tensor, read (and only then cast) as a slice, so loading still copies nothing that the
plain checkpoint would not.
"""

from __future__ import annotations

import attrs
import torch

from expc.spec.diagnostics import fail


@attrs.frozen(kw_only=True)
class Part:
    """Rows `[start, stop)` of checkpoint tensor `fused`."""

    fused: str
    start: int
    stop: int
    total: int  # the fused tensor's first dimension


def split_rows(fused: str, parts: dict[str, int]) -> dict[str, Part]:
    """Split key -> its `Part`, for `parts` (split key -> rows) laid out in order in `fused`."""
    total, start, found = sum(parts.values()), 0, {}
    for key, rows in parts.items():
        found[key] = Part(fused=fused, start=start, stop=start + rows, total=total)
        start += rows
    return found


@attrs.frozen(kw_only=True)
class FusedSplit:
    """`checkpoint` plus the split keys of `parts` (the loader's checkpoint interface)."""

    checkpoint: object
    parts: dict[str, Part]

    @property
    def config(self) -> dict:
        return self.checkpoint.config

    def __contains__(self, name: str) -> bool:
        part = self.parts.get(name)
        return name in self.checkpoint if part is None else part.fused in self.checkpoint

    def expect_shape(self, name: str, shape: tuple[int, ...] | torch.Size) -> None:
        part = self.parts.get(name)
        if part is None:
            return self.checkpoint.expect_shape(name, shape)
        found = self.checkpoint.shape(part.fused)
        if found != (part.total, *tuple(shape)[1:]):
            raise fail(self.checkpoint.locations[part.fused], f"fused tensor `{part.fused}` has "
                       f"shape {list(found)} but the model built from config.json expects "
                       f"{[part.total, *tuple(shape)[1:]]}", code="checkpoint-shape-mismatch",
                       help=("check that config.json belongs to these weights",))
        return None

    def get_tensor(self, name: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        part = self.parts.get(name)
        if part is None:
            return self.checkpoint.get_tensor(name, dtype=dtype)
        rows = self.checkpoint.get_tensor(part.fused)[part.start:part.stop]
        return rows if dtype is None or rows.dtype == dtype else rows.to(dtype)
