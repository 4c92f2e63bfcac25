"""The per-token channel contributions of one `iterative_channel` round, computed two ways.

With P the channels pruned so far and K the rest, `Yc = linear(X with P zeroed, W) =
X_K W_K^T`, `S = a * Y - Yc`, and each kept channel j contributes
`||S + X_j W[:, j]||_2 = sqrt(||S||^2 + X_j (2 S . W_j + X_j ||W_j||^2))` (the expansion
never builds a `[B, S, D, O]` tensor). Pruned channels need no contribution (they score
+inf), so both ways work on the kept columns only, and get cheaper as rounds prune more:

- `direct`: `Yc` and `S W_K`, two products of width |K|; any calibration.
- `through_pruned`: without calibration (a = 1) and for a Linear `Y = X W^T + b`,
  `S = b + X_P W_P^T`, so `S W_K = b W_K + X_P (W_P^T W_K)` and
  `||S||^2 = ||b||^2 + 2 (b W_P) . X_P + X_P . X_P (W_P^T W_P)`: products of width |P|
  through the round's Gram blocks (`PrunedGrams`, |P| x D numbers, computed once a round),
  free while nothing is pruned. `b` is read off the batch itself, `Y - X W^T` at its first
  real token, so a module with or without bias needs no extra input.
Both work in place on temporaries of their own (see `base.py`).
"""

from __future__ import annotations

import attrs
import torch

EPSILON = 1e-8


@attrs.frozen(kw_only=True)
class PrunedGrams:
    """`W_P^T W_K` `[P, K]` and `W_P^T W_P` `[P, P]` for one round's pruned set."""

    kept: torch.Tensor
    pruned: torch.Tensor

    @classmethod
    def of(cls, weight: torch.Tensor, pruned: torch.Tensor, kept: torch.Tensor) -> PrunedGrams:
        w_pruned = weight.index_select(1, pruned)  # [O, P]
        return cls(kept=w_pruned.T @ weight.index_select(1, kept),
                   pruned=w_pruned.T @ w_pruned)


def expand(x_kept: torch.Tensor, s_dot_w: torch.Tensor, s_squared: torch.Tensor,
           w_kept: torch.Tensor) -> torch.Tensor:
    """`sqrt(||S||^2 + X_j (2 S . W_j + X_j ||W_j||^2))`, reusing `s_dot_w` `[B, S, K]`."""
    squared = s_dot_w.mul_(2).addcmul_(x_kept, w_kept.square().sum(dim=0)).mul_(x_kept)
    return squared.add_(s_squared.unsqueeze(-1)).clamp_(min=0).sqrt_()  # [B, S, K]


def direct(x_in: torch.Tensor, y_out: torch.Tensor, weight: torch.Tensor,
           kept: torch.Tensor, calibration: str) -> torch.Tensor:
    """Contributions of the kept channels `[B, S, K]`, recomputing `Yc` and `S W_K`."""
    everything = len(kept) == x_in.shape[-1]
    x_kept = x_in if everything else x_in.index_select(-1, kept)  # [B, S, K]
    w_kept = weight if everything else weight.index_select(1, kept)  # [O, K]
    residual = x_kept @ w_kept.T  # [B, S, O], Yc for now
    if calibration == "scale_by_magnitude":
        scale = residual.norm(dim=-1) / (y_out.norm(dim=-1) + EPSILON)  # [B, S]
        residual.neg_().addcmul_(y_out, scale.unsqueeze(-1))  # a * Y - Yc
    else:
        residual.neg_().add_(y_out)  # Y - Yc
    s_squared = residual.norm(dim=-1).square_()  # [B, S]
    return expand(x_kept, residual @ w_kept, s_squared, w_kept)


def affine_offset(x_in: torch.Tensor, y_out: torch.Tensor, weight: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """The Linear's bias as the batch shows it: `Y - X W^T` at the first real token, `[O]`."""
    first = mask.flatten().to(torch.uint8).argmax()  # index of the first real token
    token_in = x_in.flatten(0, 1).index_select(0, first.view(1))  # [1, D]
    token_out = y_out.flatten(0, 1).index_select(0, first.view(1))  # [1, O]
    return (token_out - token_in @ weight.T).squeeze(0)  # [O]


def through_pruned(x_in: torch.Tensor, y_out: torch.Tensor, weight: torch.Tensor,
                   pruned: torch.Tensor, kept: torch.Tensor, grams: PrunedGrams,
                   mask: torch.Tensor) -> torch.Tensor:
    """Contributions of the kept channels `[B, S, K]` without calibration."""
    offset = affine_offset(x_in, y_out, weight, mask)  # [O]
    offset_w = offset @ weight  # [D]
    x_pruned = x_in.index_select(-1, pruned)  # [B, S, P]
    x_kept = x_in if len(pruned) == 0 else x_in.index_select(-1, kept)  # [B, S, K]
    s_squared = ((x_pruned @ grams.pruned).mul_(x_pruned).sum(dim=-1)  # [B, S]
                 + 2 * (x_pruned @ offset_w.index_select(0, pruned))
                 + offset.square().sum())
    s_dot_w = (x_pruned @ grams.kept).add_(offset_w.index_select(0, kept))  # [B, S, K]
    return expand(x_kept, s_dot_w, s_squared, weight.index_select(1, kept))
