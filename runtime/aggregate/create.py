"""Build the aggregator behind a capture statement's `aggregate = ...` (after d9d's factory).

`create_aggregator(mode=..., mask=..., field=...)` is the one entry point the runtime uses;
the modes live in their own files of `runtime/aggregate/`, and their words are the language's
(`expc.spec.vocabulary.AGGREGATE_MODES`, `MASKS`). `none` has no aggregator: the plan drops
such captures before any state is built. What `result()` gives, by suffix:
- `mean`, `sum`, `max`: `""` `[N, *F]`, one row per sample in the order fed (sums and means
  in float32 at least, max in the activations' dtype);
- `full`: `""` `[N, S_max, *F]` (unselected positions zero) and `.mask` `[N, S_max]` bool;
- `dataset_mean`: `""` mean and `.var` population variance `[*F]`, `.count` tokens `[]`.
"""

from __future__ import annotations

from expc.runtime.aggregate.base import Aggregator
from expc.runtime.aggregate.dataset_mean import DatasetMeanAggregator
from expc.runtime.aggregate.full import FullAggregator
from expc.runtime.aggregate.masks import EmptyMaskError
from expc.runtime.aggregate.per_sample import PerSampleAggregator
from expc.spec.vocabulary import AGGREGATE_MODES, DEFAULT_MASK

__all__ = ["Aggregator", "EmptyMaskError", "create_aggregator"]


def create_aggregator(*, mode: str, mask: str | None = DEFAULT_MASK, field: str | None = None,
                      eager_checks: bool | None = None) -> Aggregator:
    """The aggregator for one capture; unknown mode or mask (or `none`) is a `ValueError`.

    `mask=None` (a statement that names none) means the default mask, `attention`.
    `eager_checks` (default: by device) says whether an all-zero mask row is reported at
    the batch that has it or at the next result/state request; see `aggregate/masks.py`.
    """
    if mode == "none":
        raise ValueError("aggregate = none keeps nothing and has no aggregator "
                         "(the plan drops such captures)")
    if mode not in AGGREGATE_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of "
                         f"{', '.join(AGGREGATE_MODES)}")
    options = {"mask": mask or DEFAULT_MASK, "field": field, "eager_checks": eager_checks}
    if mode == "full":
        return FullAggregator(**options)
    if mode == "dataset_mean":
        return DatasetMeanAggregator(**options)
    return PerSampleAggregator(reduction=mode, **options)
