"""Rows on their way to disk leave the device without stopping it.

A capture's rows are copied to host memory as each batch produces them, so device memory
holds one batch of rows, not a shard's worth. On CUDA the copy goes into pinned (page-locked)
host memory with `non_blocking=True`: the copy runs beside the next kernels and nothing on
the host waits for it. The host may read such rows only after `settle`, which the
aggregators call once when rows are packed (for a shard, a checkpoint or the finish), never
per batch. On CPU (and any other device) rows stay where they are and `settle` does nothing.
"""

from __future__ import annotations

import torch


def to_host(rows: torch.Tensor) -> torch.Tensor:
    """`rows` on the host: a pinned copy in flight on CUDA (read after `settle`), else itself."""
    if rows.device.type != "cuda":
        return rows
    host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
    host.copy_(rows, non_blocking=True)
    return host


def host_block(like: torch.Tensor, rows: int) -> torch.Tensor:
    """An empty `[rows, *like.shape[1:]]` host block for `like`'s rows (pinned for CUDA)."""
    return torch.empty((rows, *like.shape[1:]), dtype=like.dtype,
                       pin_memory=like.device.type == "cuda")


def settle(device: torch.device | None) -> None:
    """Wait for the copies `to_host` started from `device` (None: none were started)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
