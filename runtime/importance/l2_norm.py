"""`l2_norm`: how large each input channel of a module is, sample by sample.

Per batch it adds `sum_b (mean_{s: m=1} |X[b, s, :]|)^2` (the per-sample mean over real tokens
only, unlike the hook it follows, which averages padding in); the score is the square root of
the total, `[D]`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.importance.base import INPUT, ImportanceMetric, masked_abs


class L2NormMetric(ImportanceMetric):
    name = "l2_norm"
    needs = frozenset({INPUT})
    rows = True

    def __init__(self) -> None:
        super().__init__()
        self._squares: torch.Tensor | None = None  # [D] float64
        self._tokens = torch.zeros((), dtype=torch.float64)

    def _update(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                mask: torch.Tensor) -> torch.Tensor:
        assert x_in is not None
        counts = mask.sum(dim=1, keepdim=True)  # [B, 1]
        per_sample = masked_abs(x_in, mask).sum(dim=1)  # [B, D]
        per_sample = per_sample / counts.clamp(min=1)  # a row with no token adds nothing
        batch = per_sample.double().square().sum(dim=0)  # [D]
        self._squares = batch if self._squares is None else self._squares + batch
        self._tokens = self._tokens.to(mask.device) + counts.sum()
        return per_sample

    def result(self) -> dict[str, torch.Tensor]:
        if self._squares is None:
            raise ValueError("l2_norm has seen no batch yet")
        return {"score": self._squares.sqrt().float()}

    def progress(self) -> dict[str, int]:
        return {**super().progress(), "tokens": int(self._tokens)}

    def _state(self) -> dict[str, torch.Tensor]:
        state = {"tokens": self._tokens}
        return state if self._squares is None else {**state, "squares": self._squares}

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        self._tokens = state["tokens"].double()
        self._squares = state["squares"].double() if "squares" in state else None

    def _merge(self, other: ImportanceMetric) -> None:
        assert isinstance(other, L2NormMetric)
        if other._squares is not None:
            self._squares = other._squares.clone() if self._squares is None else (
                self._squares + other._squares.to(self._squares.device))
        self._tokens = self._tokens + other._tokens.to(self._tokens.device)
