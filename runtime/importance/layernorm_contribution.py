"""`layernorm_contribution`: mean |Y| per channel of a norm's output over every real token."""

from __future__ import annotations

import torch

from expc.runtime.importance.base import OUTPUT, TokenMeanMetric, masked_abs


class LayernormContributionMetric(TokenMeanMetric):
    name = "layernorm_contribution"
    needs = frozenset({OUTPUT})

    def token_sum(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                  mask: torch.Tensor) -> torch.Tensor:
        assert y_out is not None
        return masked_abs(y_out, mask).sum(dim=(0, 1))  # [C]

    def result(self) -> dict[str, torch.Tensor]:
        return {"score": self.token_mean().float()}
