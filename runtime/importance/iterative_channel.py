"""`iterative_channel`: rank a Linear's input channels by pruning them greedily in rounds.

The run's `total_batches` T are split into I = `iterations` rounds of consecutive batches
(batch b belongs to round floor(b * I / T)), and the D channels into per-round pruning
budgets as even (round r ends with floor((r + 1) * D / I) channels pruned). Within a
round, with the set P pruned so far: `Yc = linear(X with P zeroed, W)`, per token
`a = 1` (`calibration = none`) or `||Yc|| / (||Y|| + 1e-8)` (`scale_by_magnitude`),
`S = a * Y - Yc`, and channel j contributes `||S + X_j W[:, j]||_2`, averaged over the
round's real tokens (P set to +inf). When the next round begins (or the result is asked
for) the round's budget of smallest contributions joins P. The score of channel j is the
position at which it was pruned (0 = least important), with `channels_importance_ascending`
the pruning order itself.

A round is closed lazily, so data-parallel shards of the same batches can be merged (their
round sums add) before the pruning decision; sequential halves cannot be merged, since the
second depends on what the first pruned.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.importance.base import INPUT, OUTPUT, ImportanceMetric
from expc.runtime.importance.iterative_contributions import PrunedGrams, direct, through_pruned
from expc.runtime.token_sums import promoted_dtype


def prune_budgets(*, channels: int, rounds: int) -> list[int]:
    """How many channels each round prunes: as even as possible, summing to `channels`."""
    return [(r + 1) * channels // rounds - r * channels // rounds for r in range(rounds)]


class IterativeChannelMetric(ImportanceMetric):
    name = "iterative_channel"
    needs = frozenset({INPUT, OUTPUT})
    CONTEXT = ("weight", "total_batches")

    def __init__(self, *, weight: torch.Tensor, total_batches: int | None, iterations: int,
                 calibration: str):
        super().__init__()
        if total_batches is None:
            raise ValueError("iterative_channel needs the run's number of batches")
        if total_batches < iterations:
            raise ValueError(f"iterative_channel with iterations = {iterations} needs at least "
                             f"{iterations} batches (one per round); the run has "
                             f"{total_batches}")
        self.weight = weight.detach()  # [O, D]
        self.iterations = iterations
        self.calibration = calibration
        self.total_batches = total_batches
        self._budgets = prune_budgets(channels=weight.shape[1], rounds=iterations)
        self._rounds_closed = 0
        self._pruned = torch.zeros(0, dtype=torch.long)  # [P] channel ids in pruning order
        self._round_sum = torch.zeros(weight.shape[1], dtype=torch.float64)  # [D]
        self._round_count = torch.zeros((), dtype=torch.float64)
        self._round_cache: dict[tuple, object] = {}  # kept channels, Gram blocks

    def _round_of(self, batch: int) -> int:
        return batch * self.iterations // self.total_batches

    def _closed(self, round_index: int) -> torch.Tensor:
        """The pruning order once round `round_index` (the open one) is closed."""
        mean = self._round_sum / self._round_count.clamp(min=1)  # [D]
        mean = mean.index_fill(0, self._pruned.to(mean.device), float("inf"))
        chosen = torch.argsort(mean, stable=True)[: self._budgets[round_index]]
        return torch.cat([self._pruned.to(chosen.device), chosen])

    def _close_round(self) -> None:
        self._round_cache.clear()
        self._pruned = self._closed(self._rounds_closed)
        self._round_sum = torch.zeros_like(self._round_sum)
        self._round_count = torch.zeros_like(self._round_count)
        self._rounds_closed += 1

    def _update(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                mask: torch.Tensor) -> torch.Tensor:
        assert x_in is not None and y_out is not None
        if self._batches >= self.total_batches:
            raise ValueError(f"iterative_channel was told the run has {self.total_batches} "
                             "batches and got more")
        while self._rounds_closed < self._round_of(self._batches):
            self._close_round()
        dtype = promoted_dtype(x_in)
        x_in, y_out = x_in.to(dtype), y_out.to(dtype)
        weight = self.weight.to(device=x_in.device, dtype=dtype)  # [O, D]
        pruned = self._pruned.to(x_in.device)  # [P]
        kept = self.kept_channels(x_in.device)  # [K]
        if self.through_pruned_is_cheaper(weight):
            contribution = through_pruned(x_in, y_out, weight, pruned, kept,
                                          self.pruned_grams(weight, pruned, kept), mask)
        else:
            contribution = direct(x_in, y_out, weight, kept, self.calibration)
        contribution.masked_fill_(~mask.unsqueeze(-1), 0.0)  # [B, S, K]
        batch_sum = contribution.sum(dim=(0, 1)).double()  # [K]
        self._round_sum = self._round_sum.to(x_in.device).index_add(0, kept, batch_sum)
        self._round_count = self._round_count.to(x_in.device) + mask.sum()
        return batch_sum

    def kept_channels(self, device: torch.device) -> torch.Tensor:
        """The channels not pruned yet, ascending: `[K]`, found once per round."""
        if ("kept", device) not in self._round_cache:
            keep = torch.ones(self.weight.shape[1], dtype=torch.bool, device=device)
            keep = keep.index_fill(0, self._pruned.to(device), False)
            self._round_cache[("kept", device)] = keep.nonzero().squeeze(1)
        return self._round_cache[("kept", device)]

    def through_pruned_is_cheaper(self, weight: torch.Tensor) -> bool:
        """Without calibration, take the |P|-wide way when it costs fewer multiplications
        than the direct one (|P| D against 2 |K| O) and its Gram blocks are no larger than W."""
        outputs, channels = weight.shape
        n_pruned = len(self._pruned)
        return (self.calibration == "none" and n_pruned <= outputs
                and n_pruned * channels <= 2 * (channels - n_pruned) * outputs)

    def pruned_grams(self, weight: torch.Tensor, pruned: torch.Tensor,
                     kept: torch.Tensor) -> PrunedGrams:
        """This round's Gram blocks, computed once per round."""
        key = ("grams", weight.device, weight.dtype)
        if key not in self._round_cache:
            self._round_cache[key] = PrunedGrams.of(weight, pruned, kept)
        return self._round_cache[key]

    def result(self) -> dict[str, torch.Tensor]:
        if self._batches < self.total_batches:
            raise ValueError(f"iterative_channel has seen {self._batches} of the run's "
                             f"{self.total_batches} batches; its rounds are not finished")
        while self._rounds_closed < self.iterations:
            self._close_round()
        order = self._pruned.cpu()  # [D]
        score = torch.empty_like(order)
        score[order] = torch.arange(len(order))
        return {"score": score, "channels_importance_ascending": order}

    def progress(self) -> dict[str, int]:
        return {**super().progress(), "total_batches": self.total_batches,
                "rounds_closed": self._rounds_closed, "rounds": self.iterations,
                "pruned": len(self._pruned)}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"rounds_closed": torch.tensor(self._rounds_closed), "pruned": self._pruned,
                "round_sum": self._round_sum, "round_count": self._round_count}

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        self._round_cache.clear()
        self._rounds_closed = int(state["rounds_closed"])
        self._pruned = state["pruned"].long()
        self._round_sum = state["round_sum"].double()
        self._round_count = state["round_count"].double()

    def merge(self, other: ImportanceMetric) -> None:
        """Add a data-parallel shard's sums: both must be at the same batch of the same rounds.

        Shards merge at each round boundary (after a round's last batch), and every shard then
        continues from the merged state, so all prune the same channels.
        """
        if not isinstance(other, IterativeChannelMetric):
            raise ValueError(f"cannot merge {other.name} state into {self.name}")
        same = (other._batches == self._batches and other._rounds_closed == self._rounds_closed
                and torch.equal(other._pruned.cpu(), self._pruned.cpu()))
        if not same:
            raise ValueError("iterative_channel states merge only as shards of the same "
                             "batches: both must have seen as many batches and pruned the "
                             "same channels")
        self._round_sum = self._round_sum + other._round_sum.to(self._round_sum.device)
        self._round_count = self._round_count + other._round_count.to(self._round_count.device)
