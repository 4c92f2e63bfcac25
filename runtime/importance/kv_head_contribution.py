"""`kv_head_contribution`: how much each key/value head group feeds the attention output.

At the attention output projection, X `[B, S, n_heads * d]` splits into K = n_kv_heads groups
of width G = d * g (g query heads per KV head) and W `[O, n_heads * d]` into the matching
column blocks; per token the contribution of group k is `||X_k W_k^T||_2`, and the score is
its mean over every real token of the run, `[K]`. The norm is computed as
`sqrt(X_k (W_k^T W_k) X_k^T)` with each group's `[G, G]` Gram matrix, which never builds the
`[B, S, O]` products. `optimize_for` picks the computation, never the result: `latency` does
every group in one batched product (a temporary the size of X), `memory` one group at a time
(a temporary 1/K of that).
"""

from __future__ import annotations

import torch

from expc.runtime.importance.base import INPUT, TokenMeanMetric
from expc.runtime.token_sums import promoted_dtype


class KvHeadContributionMetric(TokenMeanMetric):
    name = "kv_head_contribution"
    needs = frozenset({INPUT})
    CONTEXT = ("weight", "n_kv_heads", "head_dim")

    def __init__(self, *, weight: torch.Tensor, n_kv_heads: int | None,
                 head_dim: int | None, optimize_for: str):
        super().__init__()
        if not n_kv_heads:
            raise ValueError("kv_head_contribution needs the model's number of KV heads")
        width = weight.shape[1]
        if width % n_kv_heads or (head_dim and (width // n_kv_heads) % head_dim):
            raise ValueError(f"kv_head_contribution: {width} input channels do not split into "
                             f"{n_kv_heads} KV groups of whole heads of size {head_dim}")
        self.weight = weight.detach()  # [O, K * G]
        self.n_kv_heads = n_kv_heads
        self.optimize_for = optimize_for
        self._grams: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def gram(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """`W_k^T W_k` for every group, `[K, G, G]`, computed once per device and dtype."""
        if (device, dtype) not in self._grams:
            blocks = self.weight.to(device=device, dtype=dtype).unflatten(
                -1, (self.n_kv_heads, -1))  # [O, K, G]
            self._grams[(device, dtype)] = torch.einsum("okg,okh->kgh", blocks, blocks)
        return self._grams[(device, dtype)]

    def token_norms(self, x_in: torch.Tensor) -> torch.Tensor:
        """`||X_k W_k^T||_2` for every token and group: `[B, S, K]`."""
        dtype = promoted_dtype(x_in)
        groups = x_in.to(dtype).unflatten(-1, (self.n_kv_heads, -1))  # [B, S, K, G]
        gram = self.gram(x_in.device, dtype)  # [K, G, G]
        if self.optimize_for == "latency":
            projected = torch.einsum("bskg,kgh->bskh", groups, gram)  # [B, S, K, G]
            squared = projected.mul_(groups).sum(dim=-1)  # [B, S, K]
        else:
            squared = torch.stack([(groups[..., k, :] @ gram[k]).mul_(groups[..., k, :])
                                   .sum(dim=-1)  # [B, S]
                                   for k in range(self.n_kv_heads)], dim=-1)  # [B, S, K]
        return squared.clamp_(min=0).sqrt_()

    def token_sum(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                  mask: torch.Tensor) -> torch.Tensor:
        assert x_in is not None
        norms = self.token_norms(x_in).masked_fill_(~mask.unsqueeze(-1), 0.0)  # [B, S, K]
        return norms.sum(dim=(0, 1))  # [K]

    def result(self) -> dict[str, torch.Tensor]:
        return {"score": self.token_mean().float()}
