"""`block_influence`: how much a whole layer changes the residual stream (ShortGPT's Block
Influence, which Minitron uses to drop layers).

Fed a layer's `resid_in` X `[B, S, H]` and `resid_out` Y `[B, S, H]` (as a module's input and
output), it sums `cos(X[b, s], Y[b, s])` over every real token of the run and counts them;
the score is `1 - (that sum / token count)`, one number per layer `[]`. Higher means the
layer turns its input further, so it matters more; the layer with the lowest score is the
first a pruner drops. Cosines are taken in float32 at least (float64 inputs stay float64),
as `torch.nn.functional.cosine_similarity` does (each norm clamped at 1e-8, so a zero vector
has cosine 0), and summed in float64.
"""

from __future__ import annotations

import torch

from expc.runtime.importance.base import INPUT, OUTPUT, TokenMeanMetric
from expc.runtime.token_sums import promoted_dtype

EPS = 1e-8


class BlockInfluenceMetric(TokenMeanMetric):
    name = "block_influence"
    needs = frozenset({INPUT, OUTPUT})

    def token_sum(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                  mask: torch.Tensor) -> torch.Tensor:
        assert x_in is not None and y_out is not None
        if x_in.shape != y_out.shape:
            raise ValueError(f"block_influence compares a layer's input and output of the same "
                             f"shape, got {tuple(x_in.shape)} and {tuple(y_out.shape)}")
        dtype = promoted_dtype(x_in)
        cosine = torch.nn.functional.cosine_similarity(x_in.to(dtype), y_out.to(dtype), dim=-1,
                                                       eps=EPS)  # [B, S]
        return cosine.masked_fill_(~mask, 0.0).sum(dtype=torch.float64)  # []

    def result(self) -> dict[str, torch.Tensor]:
        return {"score": (1.0 - self.token_mean()).float()}
