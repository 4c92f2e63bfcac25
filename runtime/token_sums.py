"""Sums over the selected tokens of a batch, without copying the activations when possible.

On CPU every fresh `[B, S, H]` temporary costs far more than the arithmetic on it (the pages
of a new allocation must be mapped), so per-sample sums are one batched matrix product of
the 0/1 token mask with the activations, which allocates only the `[B, *F]` result. A
product would turn a NaN or inf sitting in an unselected (padding) position into a NaN
result, so a non-finite result is recomputed the safe way, selecting with `where`; on
accelerators, and for half precision (which a product would also sum in half precision),
the safe way is the only one.
"""

from __future__ import annotations

import torch

WIDE = (torch.float32, torch.float64)


def broadcast_rows(selected: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`[B, S]` token mask viewed as `[B, S, 1, ...]` to broadcast against `values`."""
    return selected.view(*selected.shape, *([1] * (values.dim() - 2)))


def promoted_dtype(values: torch.Tensor) -> torch.dtype:
    """Half-precision values are summed in float32; float32 and float64 stay as they are."""
    return values.dtype if values.dtype in WIDE else torch.float32


def sum_selected(values: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Per-sample sum over the selected tokens: `[B, S, *F]`, `[B, S]` bool -> `[B, *F]`."""
    if values.device.type == "cpu" and values.dtype in WIDE:
        batch, seq = selected.shape
        weights = selected.to(values.dtype).unsqueeze(1)  # [B, 1, S]
        total = torch.bmm(weights, values.reshape(batch, seq, -1))  # [B, 1, prod F]
        total = total.view(batch, *values.shape[2:])  # [B, *F]
        if bool(torch.isfinite(total).all()):
            return total
    keep = broadcast_rows(selected, values)  # [B, S, 1, ...]
    return torch.where(keep, values, 0.0).sum(dim=1, dtype=promoted_dtype(values))
