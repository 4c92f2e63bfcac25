"""The one rule that picks units by score, `lowest`/`highest` interventions' and `expc prune`'s:
the K lowest (highest) scores, ties to the lower index, in ascending index order."""

from __future__ import annotations

import numpy as np
import pytest

from expc.spec.rankings import ranked


def _reference(scores, k, highest):
    """Sort (score, index) pairs, written out: the lower index wins a tie either way."""
    pairs = sorted(enumerate(scores), key=lambda p: ((-p[1] if highest else p[1]), p[0]))
    return sorted(i for i, _ in pairs[:k])


@pytest.mark.parametrize("highest", [False, True])
def test_ties_go_to_the_lower_index_and_indices_come_back_ascending(highest):
    scores = [0.5, 0.1, 0.5, 0.1, 0.9, 0.5, -0.0, 0.0]
    for k in range(1, len(scores)):
        got = ranked(np.array(scores, np.float32), k, highest=highest)
        assert got.dtype == np.int64 and got.tolist() == _reference(scores, k, highest), k


def test_random_scores_with_many_ties_match_the_written_out_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.integers(0, 5, size=int(rng.integers(2, 40))).astype(np.float64) / 4
        k = int(rng.integers(1, len(scores)))
        for highest in (False, True):
            assert ranked(scores, k, highest=highest).tolist() == _reference(
                scores.tolist(), k, highest)
