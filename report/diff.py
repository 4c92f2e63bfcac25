"""`expc diff`: compare two run folders key by key and name the first layer where they drift.

For every key in either run: missing on one side, shape or dtype mismatch, and the largest
absolute and relative difference (values compared in float64, so a float32 run can be held
against a bfloat16 one; a slice of samples at a time, so large captures fit in memory). A
key differs when some element is outside `atol + rtol * |b|`. Keys are walked in forward
order (data, embed, trunk layers, each head's layers, final_norm, logits), so the first
differing key names the layer where the numbers first diverge.

Effects (`effect/...`, one value per sample in data order) compare like captures, element
by element, and each side's mean (over its finite values, in float64) is named beside them;
integer keys (`intervention/.../channels`, `meta/*`) compare exactly, whatever the
tolerances.

NaN and inf: each side's NaN, +inf and -inf are counted per key (`report/nonfinite.py`). In
the differences a NaN equals a NaN at the same place (and an inf the same inf), so max abs
and max rel say how the finite values compare; but a key holding any NaN or inf on either
side is never `same`: its status is `nonfinite`, and the runs differ (exit 1), so two runs
that both computed garbage do not pass as reproducing each other.

Rankings: an importance key whose order is what matters (`spec/rankings.py`: every metric's
`score`, `iterative_channel`'s `channels_importance_ascending`) is also compared as a
ranking (`report/rank_compare.py`: top-k overlap and Spearman's rank correlation), and the
text output shows those in place of the largest differences. Its status is still decided
by the tolerances, like every key's: `expc diff` checks that runs reproduce each other.

A run whose status is not `complete` (`running`, `failed`) holds partial results at best:
the comparison says so first, and such runs are never the same (exit 1), whatever their keys.
"""

from __future__ import annotations

import json
import math

import attrs
import torch

from expc.report.diff_defaults import DEFAULT_ATOL, DEFAULT_RTOL
from expc.report.effect_stats import interval
from expc.report.keys import forward_position, place_label
from expc.report.nonfinite import NonFiniteCount, count_nonfinite
from expc.report.rank_compare import RankComparison, compare_rankings
from expc.report.run_folder import RunFolder, open_run_folder
from expc.spec.rankings import ranking_kind
from expc.spec.run_format import parse_key

# manifest fields worth naming when two runs differ (they explain drift; they never decide)
CONTEXT_FIELDS = (("spec", "sha256"), ("model", "path"), ("ir", "dtype"), ("ir", "device"),
                  ("data", "samples"), ("versions", "torch"))


@attrs.frozen(kw_only=True)
class KeyDiff:
    """How one key compares between run A and run B."""

    key: str
    status: str  # same | differs | nonfinite | shape | missing_in_a | missing_in_b
    place: str
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    nonfinite_a: NonFiniteCount | None = None  # None where the key is not in run A
    nonfinite_b: NonFiniteCount | None = None
    mean_a: float | None = None  # effects: the mean of each side's finite values
    mean_b: float | None = None
    ranking: RankComparison | None = None  # ranking keys of the same shape on both sides

    @property
    def same(self) -> bool:
        return self.status == "same"

    @property
    def has_nonfinite(self) -> bool:
        return any(count is not None and count.total
                   for count in (self.nonfinite_a, self.nonfinite_b))


@attrs.frozen(kw_only=True)
class RunDiff:
    """All keys compared, in forward order."""

    run_a: str
    run_b: str
    atol: float
    rtol: float
    keys: tuple[KeyDiff, ...]
    context: tuple[tuple[str, object, object], ...] = ()  # (field, in A, in B) that differ
    status_a: str = "complete"  # each run's manifest status
    status_b: str = "complete"

    @property
    def incomplete(self) -> tuple[tuple[str, str, str], ...]:
        """(side, run folder, status) of each run that is not `complete`."""
        return tuple((side, run, status) for side, run, status in
                     (("a", self.run_a, self.status_a), ("b", self.run_b, self.status_b))
                     if status != "complete")

    @property
    def same(self) -> bool:
        return not self.incomplete and all(k.same for k in self.keys)

    @property
    def first_divergence(self) -> KeyDiff | None:
        """The first key in forward order that is not the same."""
        return next((k for k in self.keys if not k.same), None)

    def to_json(self) -> dict:
        first = self.first_divergence
        return {
            "run_a": self.run_a, "run_b": self.run_b, "atol": self.atol, "rtol": self.rtol,
            "same": self.same, "status": {"a": self.status_a, "b": self.status_b},
            "first_divergence": None if first is None else {"place": first.place,
                                                            "key": first.key},
            "context": [{"field": f, "a": a, "b": b} for f, a, b in self.context],
            "nonfinite_keys": [k.key for k in self.keys if k.has_nonfinite],
            "keys": [attrs.asdict(k) for k in self.keys],
        }


def compare_values(a: torch.Tensor, b: torch.Tensor, *, atol: float, rtol: float
                   ) -> tuple[bool, float, float]:
    """(within tolerance, max |a-b|, max |a-b| / |b|) of two same-shape tensors in float64.

    Two integer (or bool) tensors are within tolerance only when equal: tolerances are for
    rounding, and indices or counts do not round. The relative difference of an element
    where b is 0 is 0 if a is 0 too, else inf; NaN against NaN counts as equal, NaN against
    a number as infinitely different."""
    exact = not a.is_floating_point() and not b.is_floating_point()
    atol, rtol = (0.0, 0.0) if exact else (atol, rtol)
    a, b = a.double(), b.double()
    both_nan = torch.isnan(a) & torch.isnan(b)
    same_inf = torch.isinf(a) & (a == b)
    delta = (a - b).abs().masked_fill(both_nan | same_inf, 0.0).nan_to_num(nan=float("inf"))
    scale = b.abs().masked_fill(both_nan | same_inf, 1.0).nan_to_num(nan=1.0)
    relative = torch.where(delta == 0, torch.zeros_like(delta), delta / scale)  # inf at b == 0
    within = bool((delta <= atol + rtol * scale).all()) if a.numel() else True
    max_abs = float(delta.max()) if a.numel() else 0.0
    max_rel = float(relative.max()) if a.numel() else 0.0
    return within, max_abs, max_rel


def _count(folder: RunFolder, key: str) -> NonFiniteCount:
    """The NaN and infinities of one side's key, read a slice at a time."""
    count = NonFiniteCount()
    for part in folder.chunks(key, folder.rows_per_chunk(key)):
        count += count_nonfinite(part)
    return count


def _means(key: str, a: RunFolder, b: RunFolder) -> dict[str, float | None]:
    """An effect key's mean on each side that has it (nothing for other keys)."""
    if parse_key(key).kind != "effect":
        return {}
    return {f"mean_{side}": interval(folder.tensor(key)).mean if key in folder.layout else None
            for side, folder in (("a", a), ("b", b))}


def _ranking(key: str, a: RunFolder, b: RunFolder) -> dict[str, RankComparison | None]:
    """A ranking key's two rankings compared, where both sides hold it with one shape of at
    least two units (nothing for other keys)."""
    kind = ranking_kind(parse_key(key))
    if kind is None or key not in a.layout or key not in b.layout:
        return {}
    (shape_a, _), (shape_b, _) = a.layout[key], b.layout[key]
    if shape_a != shape_b or math.prod(shape_a) < 2:
        return {}
    return {"ranking": compare_rankings(a.tensor(key), b.tensor(key), kind)}


def _compare_key(key: str, a: RunFolder, b: RunFolder, *, atol: float, rtol: float) -> KeyDiff:
    return attrs.evolve(_compare_values_of(key, a, b, atol=atol, rtol=rtol),
                        **_means(key, a, b), **_ranking(key, a, b))


def _compare_values_of(key: str, a: RunFolder, b: RunFolder, *, atol: float, rtol: float
                       ) -> KeyDiff:
    place = place_label(parse_key(key))
    if key not in a.layout:
        shape, dtype = b.layout[key]
        return KeyDiff(key=key, status="missing_in_a", place=place, shape_b=shape, dtype_b=dtype,
                       nonfinite_b=_count(b, key))
    if key not in b.layout:
        shape, dtype = a.layout[key]
        return KeyDiff(key=key, status="missing_in_b", place=place, shape_a=shape, dtype_a=dtype,
                       nonfinite_a=_count(a, key))
    (shape_a, dtype_a), (shape_b, dtype_b) = a.layout[key], b.layout[key]
    sides = dict(shape_a=shape_a, shape_b=shape_b, dtype_a=dtype_a, dtype_b=dtype_b)
    if shape_a != shape_b:
        return KeyDiff(key=key, status="shape", place=place, nonfinite_a=_count(a, key),
                       nonfinite_b=_count(b, key), **sides)
    rows = a.rows_per_chunk(key)
    within, max_abs, max_rel = True, 0.0, 0.0
    count_a, count_b = NonFiniteCount(), NonFiniteCount()
    for part_a, part_b in zip(a.chunks(key, rows), b.chunks(key, rows)):
        part_within, part_abs, part_rel = compare_values(part_a, part_b, atol=atol, rtol=rtol)
        within, max_abs, max_rel = (within and part_within, max(max_abs, part_abs),
                                    max(max_rel, part_rel))
        count_a, count_b = count_a + count_nonfinite(part_a), count_b + count_nonfinite(part_b)
    status = "same" if within and dtype_a == dtype_b else "differs"
    status = "nonfinite" if count_a.total or count_b.total else status
    return KeyDiff(key=key, status=status, place=place, max_abs=max_abs, max_rel=max_rel,
                   nonfinite_a=count_a, nonfinite_b=count_b, **sides)


def _context(a: RunFolder, b: RunFolder) -> tuple[tuple[str, object, object], ...]:
    out = []
    for block, field in CONTEXT_FIELDS:
        value_a = (a.manifest.get(block) or {}).get(field)
        value_b = (b.manifest.get(block) or {}).get(field)
        if value_a != value_b:
            out.append((f"{block}.{field}", value_a, value_b))
    return tuple(out)


def diff_runs(run_a: str, run_b: str, *, atol: float = DEFAULT_ATOL,
              rtol: float = DEFAULT_RTOL) -> RunDiff:
    """Compare every key of two run folders (raises `DiagnosticError` for unreadable ones)."""
    a, b = open_run_folder(run_a), open_run_folder(run_b)
    keys = sorted(set(a.layout) | set(b.layout),
                  key=lambda k: (forward_position(parse_key(k)), k))
    return RunDiff(run_a=str(run_a), run_b=str(run_b), atol=atol, rtol=rtol,
                   keys=tuple(_compare_key(k, a, b, atol=atol, rtol=rtol) for k in keys),
                   context=_context(a, b), status_a=a.status, status_b=b.status)


def render_json(result: RunDiff) -> str:
    """The whole comparison as JSON; an infinite difference (JSON has no inf) is null."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(result.to_json()), indent=2)
