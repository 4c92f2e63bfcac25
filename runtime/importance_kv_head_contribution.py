"""`kv_head_contribution`: how much each key/value head group feeds the attention output.

At the attention output projection, X `[B, S, n_heads * d]` splits into K = n_kv_heads groups
of width d * g (g query heads per KV head) and W `[O, n_heads * d]` into the matching column
blocks; per token the contribution of group k is `||X_k W_k^T||_2`, and the score is its mean
over every real token of the run, `[K]`. `optimize_for` picks the computation, never the
result: `latency` does every group in one batched product (a `[B, S, K, O]` temporary),
`memory` one group at a time (a `[B, S, O]` temporary).
"""

from __future__ import annotations

import torch

from expc.runtime.importance_base import INPUT, TokenMeanMetric, choice, compute_dtype


class KvHeadContributionMetric(TokenMeanMetric):
    name = "kv_head_contribution"
    needs = frozenset({INPUT})
    PARAMS = {"optimize_for": ("memory", choice("memory", "latency"))}
    CONTEXT = ("weight", "n_kv_heads", "head_dim")

    def __init__(self, *, weight: torch.Tensor, n_kv_heads: int | None,
                 head_dim: int | None = None, optimize_for: str = "memory"):
        super().__init__()
        if not n_kv_heads:
            raise ValueError("kv_head_contribution needs the model's number of KV heads")
        width = weight.shape[1]
        group = width // n_kv_heads
        if width % n_kv_heads or (head_dim and group % head_dim):
            raise ValueError(f"kv_head_contribution: {width} input channels do not split into "
                             f"{n_kv_heads} KV groups of whole heads of size {head_dim}")
        self.weight = weight.detach()  # [O, K * G]
        self.n_kv_heads = n_kv_heads
        self.optimize_for = optimize_for

    def per_token(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None) -> torch.Tensor:
        assert x_in is not None
        dtype = compute_dtype(x_in)
        groups = x_in.to(dtype).unflatten(-1, (self.n_kv_heads, -1))  # [B, S, K, G]
        weight = self.weight.to(device=x_in.device, dtype=dtype)
        blocks = weight.unflatten(-1, (self.n_kv_heads, -1))  # [O, K, G]
        if self.optimize_for == "latency":
            out = torch.einsum("bskg,okg->bsko", groups, blocks)  # [B, S, K, O]
            return out.norm(dim=-1)  # [B, S, K]
        return torch.stack([(groups[..., k, :] @ blocks[:, k, :].T).norm(dim=-1)  # [B, S]
                            for k in range(self.n_kv_heads)], dim=-1)  # [B, S, K]

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"score": self.token_mean().float()}
