"""`channel_contribution`: how much each input channel of a Linear can move its output.

Independently per channel j: `||W[:, j]||_2 * mean |X[b, s, j]|`, the mean over every real
token of the run. Both factors are reported too (`weight_norm`, `activation_mean_abs`), so a
reader can tell a large weight from a busy activation.
"""

from __future__ import annotations

import torch

from expc.runtime.importance.base import INPUT, TokenMeanMetric, masked_abs


class ChannelContributionMetric(TokenMeanMetric):
    name = "channel_contribution"
    needs = frozenset({INPUT})
    CONTEXT = ("weight",)

    def __init__(self, *, weight: torch.Tensor):
        super().__init__()
        self.weight = weight.detach()  # [O, D]

    def token_sum(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                  mask: torch.Tensor) -> torch.Tensor:
        assert x_in is not None
        return masked_abs(x_in, mask).sum(dim=(0, 1))  # [D]

    def result(self) -> dict[str, torch.Tensor]:
        activation = self.token_mean()  # [D]
        weight_norm = self.weight.double().norm(dim=0).to(activation.device)  # [D]
        return {"score": (weight_norm * activation).float(), "weight_norm": weight_norm.float(),
                "activation_mean_abs": activation.float()}
