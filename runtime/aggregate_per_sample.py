"""`mean`, `sum` and `max` over each sample's selected tokens: `[B, S, *F]` -> `[B, *F]` at once.

Reducing eagerly (after d9d's hidden-states aggregator) keeps memory flat in sequence length:
only one row per sample is ever stored. Rows from successive batches are kept as chunks and
concatenated (zero-padded when trailing dims differ, e.g. attention patterns' key length)
the first time the result, a snapshot or the state is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.aggregate_base import Aggregator
from expc.runtime.aggregate_packing import padded_cat
from expc.runtime.token_sums import broadcast_rows, sum_selected

REDUCTIONS = ("mean", "sum", "max")


class PerSampleAggregator(Aggregator):
    """One reduced row per sample, in the order the batches came."""

    def __init__(self, *, reduction: str, mask: str = "attention", field: str | None = None,
                 eager_checks: bool | None = None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        super().__init__(mask=mask, field=field, eager_checks=eager_checks)
        self.mode = reduction
        self._chunks: list[torch.Tensor] = []  # each [B, *F]

    def _add_selected(self, hidden: torch.Tensor, selected: torch.Tensor,
                      counts: torch.Tensor) -> None:
        if self.mode == "max":
            keep = broadcast_rows(selected, hidden)  # [B, S, 1, ...]
            row = torch.where(keep, hidden, float("-inf")).amax(dim=1)  # [B, *F]
        else:
            row = sum_selected(hidden, selected)  # [B, *F]
            if self.mode == "mean":
                # clamp: an empty row is reported by the guard, never divided by zero
                row = row / counts.clamp(min=1).view(-1, *([1] * (row.dim() - 1)))
        self._chunks.append(row)

    def _packed(self) -> torch.Tensor | None:
        if len(self._chunks) > 1:
            self._chunks = [padded_cat(self._chunks)]
        return self._chunks[0] if self._chunks else None

    def _empty(self) -> bool:
        return not self._chunks

    def _result(self) -> dict[str, torch.Tensor]:
        packed = self._packed()
        return {} if packed is None else {"": packed}

    def _combine(self, earlier: dict[str, torch.Tensor],
                 later: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"": padded_cat([earlier[""], later[""]])}

    def _state(self) -> dict[str, torch.Tensor]:
        packed = self._packed()
        return {} if packed is None else {"values": packed}

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        self._chunks = [state["values"]] if "values" in state else []

    def _merge(self, other: Aggregator) -> None:
        assert isinstance(other, PerSampleAggregator)
        packed = other._packed()
        if packed is not None:
            self._chunks.append(packed)
