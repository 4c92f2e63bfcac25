"""Which result keys are rankings: the one home `expc diff` (and any reader) asks.

An importance metric's `score` field orders its units — every metric's meaning in
`spec/vocabulary.py` ends "higher = more important" — and what a pruner or a `lowest(...)`
intervention does with it depends only on that order, not on the values. An order field
lists the unit indices themselves, least important first (`iterative_channel`'s
`channels_importance_ascending`). Both are compared as rankings; every other key (the
score's factors `weight_norm` and `activation_mean_abs`, captures, effects) as values.

`ranked` is the one rule that picks units by their scores: the K lowest (or highest), ties
to the lower index. `channels = lowest(...)` / `highest(...)` interventions, `expc prune`
(so a pruned checkpoint removes exactly the units such an intervention zeroes), `expc diff`'s
top-k overlap and the report's top tokens all pick by it. numpy, not torch: `expc prune`
never imports torch. Scores are compared in float64 (exact for float32 and bfloat16 scores,
so ties stay ties).
"""

from __future__ import annotations

import numpy as np

from expc.spec.run_format import KeyInfo

SCORE_FIELD = "score"  # per unit, higher = more important
ORDER_FIELDS = ("channels_importance_ascending",)  # unit indices, least important first
SCORE, ORDER = "score", "order"  # the two kinds of ranking key


def ranking_kind(info: KeyInfo) -> str | None:
    """`SCORE` for a key of scores, `ORDER` for a key of unit indices in ascending
    importance, None for a key that is not a ranking."""
    if info.kind != "importance":
        return None
    if info.field == SCORE_FIELD:
        return SCORE
    if info.field in ORDER_FIELDS:
        return ORDER
    return None


def ranked(scores, k: int, *, highest: bool) -> np.ndarray:
    """The indices `[k]` (int64, ascending) of the `k` lowest (highest) of `scores` (any
    array-like of numbers, a CPU tensor included)."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-values if highest else values, kind="stable")  # stable: lower index first
    return np.sort(order[:k]).astype(np.int64)
