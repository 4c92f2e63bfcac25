"""`layernorm_contribution`: mean |Y| per channel of a norm's output over every real token."""

from __future__ import annotations

import torch

from expc.runtime.importance_base import OUTPUT, TokenMeanMetric, compute_dtype


class LayernormContributionMetric(TokenMeanMetric):
    name = "layernorm_contribution"
    needs = frozenset({OUTPUT})

    def per_token(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None) -> torch.Tensor:
        assert y_out is not None
        return y_out.to(compute_dtype(y_out)).abs()  # [B, S, C]

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"score": self.token_mean().float()}
