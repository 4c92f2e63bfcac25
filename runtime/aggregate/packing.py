"""Concatenate per-batch chunks whose trailing dims may differ, padding with zeros.

Batches differ in sequence length, so a `full` capture's `[B, S, H]` chunks (and attention
patterns' key dimension `[B, S_q, n, S_k]`) only line up once padded to the longest; the
padded places are zeros and the mask beside the tensor marks them as not tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from expc.runtime.host_rows import host_block, settle


def padded_cat(chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding the other dims to the largest chunk's."""
    ranks = {chunk.dim() for chunk in chunks}
    if len(ranks) != 1:
        raise ValueError(f"cannot concatenate tensors of different ranks {sorted(ranks)}")
    longest = [max(sizes) for sizes in zip(*(chunk.shape for chunk in chunks))]
    device = chunks[-1].device
    # Each chunk is copied once, straight into its place (padding it first copied it twice).
    out = torch.empty((sum(len(chunk) for chunk in chunks), *longest[1:]),
                      dtype=functools.reduce(torch.promote_types,
                                             (chunk.dtype for chunk in chunks)),
                      device=device)
    first = 0
    for chunk in chunks:
        place = out[first:first + len(chunk)]
        if tuple(chunk.shape[1:]) != tuple(longest[1:]):
            place.zero_()
        place[(slice(None), *(slice(0, size) for size in chunk.shape[1:]))].copy_(chunk)
        first += len(chunk)
    return out


BLOCK_BYTES = 4 * 1024 * 1024  # one row block's size, whatever the row width


class RowBlocks:
    """Rows `[b, *F]` appended batch after batch, stored in a few large blocks.

    Why not one tensor per batch: those small, long-lived tensors land between each batch's
    short-lived activations, and the heap cannot reuse the gaps they split. The runtime
    benchmark's `mean` run over 10x the data grew by ~2.7x the rows it kept. A block holds
    `BLOCK_BYTES` of rows (at least one batch's); rows of another shape, dtype or device start
    a new block, and `packed()` joins the blocks as `padded_cat` does.
    """

    def __init__(self, *, block_bytes: int = BLOCK_BYTES, host: bool = False):
        self._block_bytes = block_bytes
        self._host = host  # blocks in host memory (`runtime/host_rows.py`), whatever the rows'
        self._copying: torch.device | None = None  # a device copies into a block still
        self._blocks: list[torch.Tensor] = []  # each [capacity, *F]; the last may have room
        self._filled = 0  # rows used in the last block

    def __len__(self) -> int:
        """Rows appended (or loaded) so far."""
        return sum(len(block) for block in self._blocks[:-1]) + self._filled

    @property
    def nbytes(self) -> int:
        """Bytes of the rows held (not of the blocks' unused room)."""
        if not self._blocks:
            return 0
        last = self._blocks[-1]
        row_bytes = last[0].nbytes if len(last) else 0
        return sum(block.nbytes for block in self._blocks[:-1]) + self._filled * row_bytes

    def append(self, rows: torch.Tensor) -> None:
        last = self._blocks[-1] if self._blocks else None
        device = torch.device("cpu") if self._host else rows.device
        fits = (last is not None and last.shape[1:] == rows.shape[1:] and last.dtype == rows.dtype
                and last.device == device and self._filled + len(rows) <= len(last))
        if not fits:
            self._seal()
            row_bytes = max(1, rows[0].nbytes if len(rows) else 1)
            capacity = max(len(rows), self._block_bytes // row_bytes)
            self._blocks.append(host_block(rows, capacity) if self._host
                                else rows.new_empty((capacity, *rows.shape[1:])))
            self._filled = 0
        self._blocks[-1][self._filled:self._filled + len(rows)].copy_(rows,
                                                                      non_blocking=self._host)
        if self._host and rows.device.type == "cuda":
            self._copying = rows.device
        self._filled += len(rows)

    def packed(self) -> torch.Tensor | None:
        """Every row in one tensor (`[N, *F]`, trailing dims zero-padded), None if empty."""
        settle(self._copying)
        self._copying = None
        self._seal()
        if len(self._blocks) > 1:
            self.replace(padded_cat(self._blocks))
        return self._blocks[0] if self._blocks else None

    def replace(self, rows: torch.Tensor | None) -> None:
        """Hold exactly `rows` (None: nothing), e.g. a loaded or merged state."""
        self._blocks = [] if rows is None else [rows]
        self._filled = 0 if rows is None else len(rows)

    def _seal(self) -> None:
        """Cut the last block to its filled rows (the untouched tail is never resident)."""
        if self._blocks and self._filled < len(self._blocks[-1]):
            self._blocks[-1] = self._blocks[-1][: self._filled]
        self._filled = len(self._blocks[-1]) if self._blocks else 0
