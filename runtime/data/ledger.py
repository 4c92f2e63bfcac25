"""`SampleLedger`: which sample each per-sample result row holds, and its token count.

Per-sample rows are kept in run order (batch after batch, each sorted by length within its
window), and the finish puts them back in data order. The batch plan of the whole data is
never built (`stream.py` reads a window at a time), so the run order is recorded as the
batches go by instead: one int64 sample number and one int64 token count per sample, 16
bytes — the same per-sample size as the `meta/sample_index` and `meta/token_count` rows the
run writes. The ledger is a `State` beside the plan's states, so it is checkpointed with
them (a resumed run knows the order of the batches it did not re-run) and merged across
ranks in rank order, exactly as the per-sample aggregators' rows are.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping

import torch

from expc.runtime.data.batches import Batch, restore_data_order
from expc.runtime.finite_watch import FiniteWatch

LEDGER_KEY = "meta/ledger"  # its name among the run's states (not a result key)


class SampleLedger:
    """The sample number and token count of every row, in run order."""

    def __init__(self) -> None:
        self.finite = FiniteWatch()  # integers: nothing to watch, kept for `State`
        self._samples = array("q")
        self._tokens = array("q")

    def add(self, batch: Batch) -> None:
        self._samples.extend(batch.sample_index.tolist())
        self._tokens.extend(batch.token_count.tolist())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sample_index": _tensor(self._samples), "token_count": _tensor(self._tokens)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        samples, tokens = state["sample_index"], state["token_count"]
        if samples.shape != tokens.shape or samples.dim() != 1:
            raise ValueError("sample_index and token_count must be [N] each")
        self._samples = array("q", samples.tolist())
        self._tokens = array("q", tokens.tolist())

    def merge(self, other: SampleLedger) -> None:
        self._samples.extend(other._samples)
        self._tokens.extend(other._tokens)

    def result(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def take_result(self) -> dict[str, torch.Tensor]:
        return self.result()

    @property
    def n_samples(self) -> int:
        return len(self._samples)

    @property
    def n_tokens(self) -> int:
        return sum(self._tokens)

    def run_order(self) -> torch.Tensor:  # [N] int64
        """Each row's sample number, in run order (what `collect_results` puts back)."""
        return _tensor(self._samples)

    def token_counts(self) -> torch.Tensor:  # [N] int64
        """Each sample's token count, in data order."""
        return restore_data_order(_tensor(self._tokens), self.run_order())


def _tensor(values: array) -> torch.Tensor:  # [N] int64, a copy
    if not values:
        return torch.zeros(0, dtype=torch.int64)
    return torch.frombuffer(values, dtype=torch.int64).clone()
