"""The per-token channel contributions of one `iterative_channel` round, computed two ways.

With P the channels pruned so far, `Yc = linear(X with P zeroed, W)`, `S = a * Y - Yc`, and
channel j contributes `||S + X_j W[:, j]||_2 = sqrt(||S||^2 + X_j (2 S . W_j + X_j ||W_j||^2))`
(the expansion never builds a `[B, S, D, O]` tensor).

- `direct`: two products the size of the module's own (`Yc`, then `S W`); any calibration.
- `through_pruned`: without calibration (a = 1) and for a Linear `Y = X W^T + b`,
  `S = b + X_P W_P^T`, so `S W = b W + X_P (W_P^T W)` and
  `||S||^2 = ||b||^2 + 2 (b W)_P . X_P + X_P . (X_P W_P^T W)_P`: one product of width |P|
  instead of two of width O, free while nothing is pruned. The round's `W_P^T W`
  (`[P, D]`) is kept, so this path is taken only while |P| <= O (no larger than W).
  `b` is read off the batch itself, `Y - X W^T` at its first real token, so a module with or
  without bias needs no extra input.
Both work in place on temporaries of their own (see `importance_base`).
"""

from __future__ import annotations

import torch

EPSILON = 1e-8


def expand(x_in: torch.Tensor, s_dot_w: torch.Tensor, s_squared: torch.Tensor,
           weight: torch.Tensor) -> torch.Tensor:
    """`sqrt(||S||^2 + X_j (2 S . W_j + X_j ||W_j||^2))`, reusing `s_dot_w` `[B, S, D]`."""
    squared = s_dot_w.mul_(2).addcmul_(x_in, weight.square().sum(dim=0)).mul_(x_in)
    return squared.add_(s_squared.unsqueeze(-1)).clamp_(min=0).sqrt_()  # [B, S, D]


def direct(x_in: torch.Tensor, y_out: torch.Tensor, weight: torch.Tensor,
           pruned: torch.Tensor, calibration: str) -> torch.Tensor:
    """Contributions `[B, S, D]` by recomputing `Yc` and `S W` in full."""
    kept = x_in.index_fill(-1, pruned, 0.0) if len(pruned) else x_in  # [B, S, D]
    residual = kept @ weight.T  # [B, S, O], Yc for now
    if calibration == "scale_by_magnitude":
        scale = residual.norm(dim=-1) / (y_out.norm(dim=-1) + EPSILON)  # [B, S]
        residual.neg_().addcmul_(y_out, scale.unsqueeze(-1))  # a * Y - Yc
    else:
        residual.neg_().add_(y_out)  # Y - Yc
    s_squared = residual.norm(dim=-1).square_()  # [B, S]
    return expand(x_in, residual @ weight, s_squared, weight)


def affine_offset(x_in: torch.Tensor, y_out: torch.Tensor, weight: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """The Linear's bias as the batch shows it: `Y - X W^T` at the first real token, `[O]`."""
    first = mask.flatten().to(torch.uint8).argmax()  # index of the first real token
    token_in = x_in.flatten(0, 1).index_select(0, first.view(1))  # [1, D]
    token_out = y_out.flatten(0, 1).index_select(0, first.view(1))  # [1, O]
    return (token_out - token_in @ weight.T).squeeze(0)  # [O]


def through_pruned(x_in: torch.Tensor, y_out: torch.Tensor, weight: torch.Tensor,
                   pruned: torch.Tensor, pruned_gram: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Contributions `[B, S, D]` without calibration; `pruned_gram` is `W_P^T W` `[P, D]`."""
    offset = affine_offset(x_in, y_out, weight, mask)  # [O]
    offset_w = offset @ weight  # [D]
    x_pruned = x_in.index_select(-1, pruned)  # [B, S, P]
    s_dot_w = x_pruned @ pruned_gram  # [B, S, D], X_P W_P^T W
    s_squared = ((s_dot_w.index_select(-1, pruned) * x_pruned).sum(dim=-1)  # [B, S]
                 + 2 * (x_pruned @ offset_w.index_select(0, pruned))
                 + offset.square().sum())
    return expand(x_in, s_dot_w.add_(offset_w), s_squared, weight)
