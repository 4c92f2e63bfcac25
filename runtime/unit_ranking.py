"""The one rule that picks units by their scores: the K lowest (or highest), ties to the lower
index, returned in ascending index order.

`channels = lowest(...)` / `highest(...)` interventions and `expc prune` both pick by it, so
a pruned checkpoint removes exactly the units such an intervention zeroes. numpy, not
torch: `expc prune` only rewrites files and never imports torch. Scores are compared in
float64 (exact for float32 and bfloat16 scores, so ties stay ties).
"""

from __future__ import annotations

import numpy as np


def ranked(scores, k: int, *, highest: bool) -> np.ndarray:
    """The indices `[k]` (int64, ascending) of the `k` lowest (highest) of `scores` (any
    array-like of numbers)."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-values if highest else values, kind="stable")  # stable: lower index first
    return np.sort(order[:k]).astype(np.int64)
