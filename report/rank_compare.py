"""Two rankings of the same units compared as rankings, for `expc diff`'s score keys.

Scores that differ by a constant factor (`l2_norm` grows with sqrt(samples)) rank units the
same, and scores within float tolerance can still swap two neighbours; what a pruner does
depends only on the order. So a ranking key is summed up by:

- **top-k overlap**: the share of run A's k most important units that are also among run
  B's k most important, k = `TOP_K_FRACTION` of the units rounded up (at least 1);
  units tied at the k-th place count in index order (lower index first).
- **Spearman's rank correlation**: Pearson's correlation of the two sides' ranks, in
  float64. Tied values share the average of the ranks they span (fractional ranking), so
  without ties it equals 1 - 6 sum(d^2) / (n (n^2 - 1)); it is undefined (None) when one
  side ranks every unit the same (all tied) or there are fewer than 2 units.

Scores are higher = more important; an order field (unit indices, least important first)
is turned into scores first: the unit at position i scores i.
"""

from __future__ import annotations

import math

import attrs
import torch

from expc.spec.rankings import ORDER, ranked

TOP_K_FRACTION = 0.10


@attrs.frozen(kw_only=True)
class RankComparison:
    """How run A's ranking of a key's units compares with run B's."""

    units: int
    k: int
    top_k_overlap: float  # |top-k(A) & top-k(B)| / k, in [0, 1]
    spearman: float | None  # in [-1, 1]; None when undefined


def top_k(units: int) -> int:
    """k for `units` units: `TOP_K_FRACTION` of them, rounded up, at least 1."""
    return max(1, math.ceil(TOP_K_FRACTION * units))


def as_scores(values: torch.Tensor, kind: str) -> torch.Tensor | None:
    """Float64 scores, higher = more important, from a score or an order key's values;
    None when an order key is not a permutation of its unit indices."""
    values = values.flatten()
    if kind != ORDER:
        return values.double()
    n = values.numel()
    if values.is_floating_point() or not torch.equal(values.sort().values, torch.arange(n)):
        return None
    scores = torch.empty(n, dtype=torch.float64)
    scores[values.long()] = torch.arange(n, dtype=torch.float64)
    return scores


def average_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based ranks in float64, ascending; tied values get the mean of the ranks they span."""
    order = torch.argsort(scores, stable=True)
    _, group, counts = torch.unique_consecutive(scores[order], return_inverse=True,
                                                return_counts=True)
    ends = counts.cumsum(0).double()  # the last 1-based rank of each group of ties
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[order] = (ends - (counts.double() - 1) / 2)[group]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation of two same-length score vectors (see the module doc)."""
    if a.numel() < 2:
        return None
    ra, rb = average_ranks(a.double()), average_ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return None if norm == 0.0 else max(-1.0, min(1.0, float((ra * rb).sum()) / norm))


def top_k_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """The share of A's k highest-scored units among B's k highest (ties: lower index first)."""
    best_a, best_b = (set(ranked(x, k, highest=True).tolist()) for x in (a, b))
    return len(best_a & best_b) / k


def compare_rankings(a: torch.Tensor, b: torch.Tensor, kind: str) -> RankComparison | None:
    """Both sides' rankings of one key compared; None when either is no ranking (an order
    key that is not a permutation) or holds NaN or inf."""
    scores_a, scores_b = as_scores(a, kind), as_scores(b, kind)
    if scores_a is None or scores_b is None or scores_a.numel() == 0:
        return None
    if not (torch.isfinite(scores_a).all() and torch.isfinite(scores_b).all()):
        return None
    k = top_k(scores_a.numel())
    return RankComparison(units=scores_a.numel(), k=k,
                          top_k_overlap=top_k_overlap(scores_a, scores_b, k),
                          spearman=spearman(scores_a, scores_b))
