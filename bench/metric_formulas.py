"""The benchmark's own importance formulas, written out plainly, and their running sums.

The peers (forward hooks, nnsight, TransformerLens) and the float64 reference compute the
issue's two metrics with these functions, never with expc's code, so an expc row that agrees
with them agrees with an independent computation:

- `channel_contribution` at a Linear with input X `[B, S, I]` and weight W `[O, I]`: per input
  channel j, `||W[:, j]||_2 * mean over every real token of the run of |X[b, s, j]|`, `[I]`;
- `kv_head_contribution` at the attention output projection: X `[B, S, n_heads * d]` splits
  into K = n_kv_heads groups of width G, W `[O, n_heads * d]` into the matching column
  blocks; score_k = mean over every real token of `||X_k W_k^T||_2`, `[K]` — computed
  directly as the product and its norm, the way NVIDIA Model Optimizer's hook does.

A method adds one token sum per batch and module (`RunningMetrics.add`); the scores divide by
the real tokens of the whole pass, so padding never counts and batch sizes never weigh in.
"""

from __future__ import annotations

import attrs
import torch

RESID_OUT = "resid_out"
CHANNEL_CONTRIBUTION = "channel_contribution"
KV_HEAD_CONTRIBUTION = "kv_head_contribution"
METRIC_MODULES = {  # metric -> the module role it reads (contracts §1 names, HF Llama paths)
    CHANNEL_CONTRIBUTION: "mlp.down_proj",
    KV_HEAD_CONTRIBUTION: "self_attn.o_proj",
}


def output_key(kind: str, layer: int) -> str:
    """How every runner keys what it computed: `resid_out/3`, `channel_contribution/3`, ..."""
    return f"{kind}/{layer}"


def channel_abs_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the real tokens of |X| per channel: [B, S, I], [B, S] -> [I]."""
    weights = mask.to(x.dtype).unsqueeze(-1)  # [B, S, 1]
    return (x.abs() * weights).sum(dim=(0, 1))  # [I]


def kv_head_norm_sum(x: torch.Tensor, weight: torch.Tensor, *, n_kv_heads: int,
                     mask: torch.Tensor) -> torch.Tensor:
    """Sum over the real tokens of `||X_k W_k^T||_2` per KV group: [B, S, D], [O, D] -> [K]."""
    width = x.shape[-1] // n_kv_heads
    weights = mask.to(x.dtype)  # [B, S]
    sums = []
    for k in range(n_kv_heads):
        columns = slice(k * width, (k + 1) * width)
        part = x[..., columns] @ weight[:, columns].T  # [B, S, O]
        sums.append((part.norm(dim=-1) * weights).sum())  # []
    return torch.stack(sums)  # [K]


@attrs.frozen(kw_only=True)
class MetricTarget:
    """One metric at one module of the Hugging Face model, under its output key."""

    key: str
    metric: str
    layer: int
    module: torch.nn.Linear = attrs.field(eq=False)


def metric_targets(blocks, metrics: tuple[str, ...], layers: tuple[int, ...]) -> list[MetricTarget]:
    """Every (metric, layer) the workload asks for, found in a Llama-style block list."""
    targets = []
    for metric in metrics:
        for layer in layers:
            module = blocks[layer].get_submodule(METRIC_MODULES[metric])
            targets.append(MetricTarget(key=output_key(metric, layer), metric=metric, layer=layer,
                                        module=module))
    return targets


class RunningMetrics:
    """Token sums of one pass over the data, per output key; `scores()` finishes them."""

    def __init__(self, targets: list[MetricTarget], *, n_kv_heads: int):
        self.targets = {target.key: target for target in targets}
        self.n_kv_heads = n_kv_heads
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens = 0

    def reset(self) -> None:
        self.sums, self.tokens = {}, 0

    def token_sum(self, key: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The batch's token sum for `key` from its module input `x` `[B, S, D]`."""
        target = self.targets[key]
        if target.metric == CHANNEL_CONTRIBUTION:
            return channel_abs_sum(x, mask)  # [I]
        weight = target.module.weight.detach().to(x.dtype)  # [O, D]
        return kv_head_norm_sum(x, weight, n_kv_heads=self.n_kv_heads, mask=mask)  # [K]

    def add_sum(self, key: str, token_sum: torch.Tensor) -> None:
        self.sums[key] = token_sum if key not in self.sums else self.sums[key] + token_sum

    def add(self, key: str, x: torch.Tensor, mask: torch.Tensor) -> None:
        self.add_sum(key, self.token_sum(key, x, mask))

    def count(self, mask: torch.Tensor) -> None:
        """Count one batch's real tokens (once per batch, not per module)."""
        self.tokens += int(mask.sum())

    def scores(self) -> dict[str, torch.Tensor]:
        """Every key's score over the tokens counted so far."""
        scores = {}
        for key, target in self.targets.items():
            mean = self.sums[key] / self.tokens
            if target.metric == CHANNEL_CONTRIBUTION:
                mean = target.module.weight.detach().to(mean.dtype).norm(dim=0) * mean  # [I]
            scores[key] = mean
        return scores
