"""Build the aggregator behind a capture statement's `aggregate = ...` (after d9d's factory).

`create_aggregator(mode=..., mask=..., field=...)` is the one entry point the runtime uses;
the modes live in their own `aggregate_*` files. What `result()` gives, by suffix:
- `none`: nothing (it accepts batches and keeps nothing, so `--set` can switch a capture off);
- `mean`, `sum`, `max`: `""` `[N, *F]`, one row per sample in the order fed (sums and means
  in float32 at least, max in the activations' dtype);
- `full`: `""` `[N, S_max, *F]` (unselected positions zero) and `.mask` `[N, S_max]` bool;
- `dataset_mean`: `""` mean and `.var` population variance `[*F]`, `.count` tokens `[]`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.aggregate_base import Aggregator, Snapshot
from expc.runtime.aggregate_dataset_mean import DatasetMeanAggregator
from expc.runtime.aggregate_full import FullAggregator
from expc.runtime.aggregate_masks import MASKS, EmptyMaskError
from expc.runtime.aggregate_per_sample import REDUCTIONS, PerSampleAggregator

MODES = ("none", "full", *REDUCTIONS, "dataset_mean")

__all__ = ["MODES", "MASKS", "Aggregator", "EmptyMaskError", "NullAggregator",
           "create_aggregator"]


class NullAggregator(Aggregator):
    """Keeps nothing; every result is empty."""

    mode = "none"

    def add(self, hidden: torch.Tensor, *, attention_mask: torch.Tensor,
            field_mask: torch.Tensor | Mapping[str, torch.Tensor] | None = None) -> None:
        self._guard.batches += 1

    def _empty(self) -> bool:
        return True

    def _result(self) -> dict[str, torch.Tensor]:
        return {}

    def pack_with_snapshot(self, snapshot: Snapshot = None) -> dict[str, torch.Tensor] | None:
        return None

    def _state(self) -> dict[str, torch.Tensor]:
        return {}

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        pass

    def _merge(self, other: Aggregator) -> None:
        pass


def create_aggregator(*, mode: str, mask: str | None = "attention", field: str | None = None,
                      eager_checks: bool | None = None) -> Aggregator:
    """The aggregator for one capture; unknown mode or mask is a `ValueError`.

    `mask=None` (a statement that names none) means `attention`.
    `eager_checks` (default: by device) says whether an all-zero mask row is reported at
    the batch that has it or at the next result/state request; see `aggregate_masks`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {', '.join(MODES)}")
    mask = mask or "attention"
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; expected one of {', '.join(MASKS)}")
    options = {"mask": mask, "field": field, "eager_checks": eager_checks}
    if mode == "none":
        return NullAggregator(**options)
    if mode == "full":
        return FullAggregator(**options)
    if mode == "dataset_mean":
        return DatasetMeanAggregator(**options)
    return PerSampleAggregator(reduction=mode, **options)
