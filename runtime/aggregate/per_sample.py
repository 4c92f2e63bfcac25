"""`mean`, `sum` and `max` over each sample's selected tokens: `[B, S, *F]` -> `[B, *F]` at once.

Reducing eagerly (after d9d's hidden-states aggregator) keeps memory flat in sequence length:
only one row per sample is ever stored. Rows from successive batches go into large row
blocks (`RowBlocks`: flat in data size too, no heap left in shreds) and are joined (zero-padded
when trailing dims differ, e.g. attention patterns' key length) the first time the result or
the state is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.aggregate.base import Aggregator
from expc.runtime.aggregate.packing import RowBlocks, padded_cat
from expc.runtime.token_sums import broadcast_rows, sum_selected
from expc.spec.vocabulary import DEFAULT_MASK

REDUCTIONS = ("mean", "sum", "max")


class PerSampleAggregator(Aggregator):
    """One reduced row per sample, in the order the batches came."""

    def __init__(self, *, reduction: str, mask: str = DEFAULT_MASK, field: str | None = None,
                 eager_checks: bool | None = None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        super().__init__(mask=mask, field=field, eager_checks=eager_checks)
        self.mode = reduction
        self._rows = RowBlocks(host=True)  # [N, *F] so far, on the host

    def _add_selected(self, hidden: torch.Tensor, selected: torch.Tensor,
                      counts: torch.Tensor) -> torch.Tensor:
        if self.mode == "max":
            keep = broadcast_rows(selected, hidden)  # [B, S, 1, ...]
            row = torch.where(keep, hidden, float("-inf")).amax(dim=1)  # [B, *F]
        else:
            row = sum_selected(hidden, selected)  # [B, *F]
            if self.mode == "mean":
                # clamp: an empty row is reported by the guard, never divided by zero
                row = row / counts.clamp(min=1).view(-1, *([1] * (row.dim() - 1)))
        self._rows.append(row)
        return row

    def _buffered_bytes(self) -> int:
        return self._rows.nbytes

    def _packed(self) -> torch.Tensor | None:
        return self._rows.packed()

    def _result(self) -> dict[str, torch.Tensor]:
        packed = self._packed()
        return {} if packed is None else {"": packed}

    def _state(self) -> dict[str, torch.Tensor]:
        packed = self._packed()
        return {} if packed is None else {"values": packed}

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        self._rows.replace(state.get("values"))

    def _merge(self, other: Aggregator) -> None:
        assert isinstance(other, PerSampleAggregator)
        mine, theirs = self._packed(), other._packed()
        if theirs is not None:
            self._rows.replace(theirs if mine is None else padded_cat([mine, theirs]))
