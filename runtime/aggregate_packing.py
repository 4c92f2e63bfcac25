"""Concatenate per-batch chunks whose trailing dims may differ, padding with zeros.

Batches differ in sequence length, so a `full` capture's `[B, S, H]` chunks (and attention
patterns' key dimension `[B, S_q, n, S_k]`) only line up once padded to the longest; the
padded places are zeros and the mask beside the tensor marks them as not tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pad_to(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad every dim after the first up to `shape` (which keeps dim 0 as it is)."""
    if tuple(tensor.shape[1:]) == tuple(shape[1:]):
        return tensor
    widths: list[int] = []
    for have, want in zip(reversed(tensor.shape[1:]), reversed(shape[1:])):
        widths += [0, want - have]
    return F.pad(tensor, widths)


def padded_cat(chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding the other dims to the largest chunk's."""
    ranks = {chunk.dim() for chunk in chunks}
    if len(ranks) != 1:
        raise ValueError(f"cannot concatenate tensors of different ranks {sorted(ranks)}")
    longest = [max(sizes) for sizes in zip(*(chunk.shape for chunk in chunks))]
    device = chunks[-1].device
    return torch.cat([pad_to(chunk.to(device), longest) for chunk in chunks])
