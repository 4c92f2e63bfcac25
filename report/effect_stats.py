"""Effect results grouped per effect and head, with each head's mean and 95% interval.

An effect writes `effect/{name}/head{h}` (`effect/{name}` without a split): one float value
per sample in data order. The report recomputes each head's summary from those values in
float64, with the formula the run writes into the manifest (docs/run-folder.md): the mean
and mean -+ 1.96 s / sqrt(n), s the sample standard deviation. Only finite values count: a
run never stores NaN or inf, but a doctored folder may, and the Run section already warns
about it; here such values are left out (and counted) rather than poisoning every number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import torch

from expc.report.run_folder import RunFolder
from expc.spec.run_format import parse_key

Z95 = 1.96  # the normal quantile of a two-sided 95% interval


@attrs.frozen(kw_only=True)
class Interval:
    """The mean of some values and its 95% interval (None where undefined)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None


def interval(values: torch.Tensor) -> Interval:
    """Mean and 95% interval of the finite values of `values` `[N]`, in float64: no mean
    without a value, no interval below two values."""
    values = values.double().flatten()
    values = values[torch.isfinite(values)]
    n = values.numel()
    if n == 0:
        return Interval(n=0, mean=None, low=None, high=None)
    mean = float(values.mean())
    if n < 2:
        return Interval(n=n, mean=mean, low=None, high=None)
    half = Z95 * float(values.std(unbiased=True)) / math.sqrt(n)
    return Interval(n=n, mean=mean, low=mean - half, high=mean + half)


@attrs.frozen(kw_only=True)
class EffectHead:
    """One effect of one head: its per-sample values and their summary."""

    key: str
    name: str  # the metric or its `as` name
    metric: str
    head: int | None
    reference: int | None
    meaning: str
    values: torch.Tensor  # [N] float64, data order, as stored (NaN included)
    summary: Interval

    @property
    def finite(self) -> torch.Tensor:
        return self.values[torch.isfinite(self.values)]

    @property
    def dropped(self) -> int:
        """How many values are NaN or inf (left out of every number and figure)."""
        return self.values.numel() - self.summary.n

    @property
    def head_label(self) -> str:
        return "model" if self.head is None else f"head {self.head}"


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def effect_groups(folder: RunFolder) -> dict[str, list[EffectHead]]:
    """effect name -> its heads in head order; keys the manifest does not describe are still
    read (their metric is their name)."""
    infos = [i for i in map(parse_key, folder.keys) if i.kind == "effect"]
    loaded = folder.tensors(i.key for i in infos)
    groups: dict[str, list[EffectHead]] = {}
    for info in sorted(infos, key=lambda i: (i.name, -1 if i.head is None else i.head)):
        entry: Mapping = folder.entry(info.key)
        values = loaded[info.key].double().flatten()
        groups.setdefault(info.name, []).append(EffectHead(
            key=info.key, name=info.name, metric=str(entry.get("metric") or info.name),
            head=info.head, reference=_optional_int(entry.get("reference")),
            meaning=str(entry.get("meaning") or ""), values=values,
            summary=interval(values)))
    return groups
