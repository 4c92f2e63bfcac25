"""`dataset_mean`: running mean and variance of every selected token of the run, `[*F]`.

Per batch the selected tokens' count, mean and sum of squared deviations are computed in one
pass and folded into the running moments with Chan et al.'s pairwise update, which is also
how two states (resume, ranks) merge — exactly, in any grouping. The running accumulators
are float64 on the activations' device; a batch's own sums are taken in the activations'
precision (float32 at least). Unselected tokens are excluded by zeroing, never by boolean
indexing, so no batch waits for the host. The variance is the population variance (divided
by the count). Features whose size follows the batch (an attention pattern's key axis) are
zero-padded to the longer of two sets, as the per-sample modes pad their rows: a token has
weight 0 on a key its sample does not have, so the padded moments are exact.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch

from expc.runtime.aggregate.base import Aggregator
from expc.runtime.token_sums import broadcast_rows, promoted_dtype, sum_selected
from expc.spec.vocabulary import DEFAULT_MASK


@attrs.frozen(kw_only=True)
class Moments:
    """Count, mean and summed squared deviations (M2) of a set of tokens."""

    count: torch.Tensor  # [] float64
    mean: torch.Tensor  # [*F] float64
    m2: torch.Tensor  # [*F] float64

    def combine(self, other: Moments) -> Moments:
        """Chan et al.'s exact pairwise combination of two disjoint sets' moments."""
        other = Moments(count=other.count.to(self.count.device),
                        mean=other.mean.to(self.mean.device), m2=other.m2.to(self.m2.device))
        if self.mean.shape != other.mean.shape:
            shape = torch.Size(map(max, self.mean.shape, other.mean.shape))
            self, other = self.padded_to(shape), other.padded_to(shape)
        count = self.count + other.count
        share = other.count / count.clamp(min=1)
        delta = other.mean - self.mean  # [*F]
        return Moments(count=count, mean=self.mean + delta * share,
                       m2=self.m2 + other.m2 + delta.square() * self.count * share)

    def padded_to(self, shape: torch.Size) -> Moments:
        """These moments with every feature axis zero-padded at its end to `shape`."""
        if self.mean.dim() != len(shape):
            raise ValueError(f"dataset_mean features changed rank: {tuple(self.mean.shape)} "
                             f"vs {tuple(shape)}")
        widths = [w for have, want in zip(reversed(self.mean.shape), reversed(shape))
                  for w in (0, want - have)]
        pad = torch.nn.functional.pad
        return Moments(count=self.count, mean=pad(self.mean, widths), m2=pad(self.m2, widths))

    def variance(self) -> torch.Tensor:
        return self.m2 / self.count.clamp(min=1)  # [*F]

    def as_result(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {"": self.mean.to(dtype), ".var": self.variance().to(dtype),
                ".count": self.count.round().long()}

    @classmethod
    def from_result(cls, result: Mapping[str, torch.Tensor]) -> Moments:
        count = result[".count"].double()
        return cls(count=count, mean=result[""].double(), m2=result[".var"].double() * count)


def batch_moments(hidden: torch.Tensor, selected: torch.Tensor,
                  counts: torch.Tensor) -> Moments:
    """Moments of the selected tokens of one `[B, S, *F]` batch."""
    count = counts.sum().double()  # []
    mean = sum_selected(hidden, selected).sum(dim=0).double() / count.clamp(min=1)  # [*F]
    deviation = hidden - mean.to(promoted_dtype(hidden))  # [B, S, *F], our own temporary
    deviation.masked_fill_(~broadcast_rows(selected, hidden), 0.0).square_()
    m2 = deviation.sum(dim=(0, 1)).double()  # [*F]
    return Moments(count=count, mean=mean, m2=m2)


class DatasetMeanAggregator(Aggregator):
    """Welford/Chan running moments over every selected token."""

    mode = "dataset_mean"
    rows = False

    def __init__(self, *, mask: str = DEFAULT_MASK, field: str | None = None,
                 eager_checks: bool | None = None):
        super().__init__(mask=mask, field=field, eager_checks=eager_checks)
        self._moments: Moments | None = None
        self._dtype = torch.float32

    def _fold(self, moments: Moments) -> None:
        self._moments = moments if self._moments is None else self._moments.combine(moments)

    def _add_selected(self, hidden: torch.Tensor, selected: torch.Tensor,
                      counts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        moments = batch_moments(hidden, selected, counts)
        self._fold(moments)
        return moments.mean, moments.m2

    def _result(self) -> dict[str, torch.Tensor]:
        return {} if self._moments is None else self._moments.as_result(self._dtype)

    def _state(self) -> dict[str, torch.Tensor]:
        if self._moments is None:
            return {}
        return {"count": self._moments.count, "mean": self._moments.mean, "m2": self._moments.m2,
                "float64": torch.tensor(self._dtype == torch.float64)}

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        self._moments = None
        if "count" in state:
            self._moments = Moments(count=state["count"].double(), mean=state["mean"].double(),
                                    m2=state["m2"].double())
            self._dtype = torch.float64 if bool(state["float64"]) else torch.float32

    def _merge(self, other: Aggregator) -> None:
        assert isinstance(other, DatasetMeanAggregator)
        if other._moments is not None:
            self._dtype = other._dtype if self._moments is None else self._dtype
            self._fold(other._moments)
