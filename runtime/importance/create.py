"""Build the metric behind an `importance NAME at MODULE { params }` statement.

`create_metric` is the one entry point the runtime uses; each metric lives in its own
file of `runtime/importance/`. Parameters are checked here (unknown names, bad values are
`ValueError`s the runtime turns into diagnostics; names, allowed values and defaults are the
language's, `expc.spec.vocabulary.METRICS`), and each metric receives only the model facts it
uses: the module weight, the KV head layout, the run's batch count. What `result()` gives
(float32 unless said):
- `l2_norm`: `score` `[D]` over the module's input channels;
- `channel_contribution`: `score`, `weight_norm`, `activation_mean_abs`, each `[D]`;
- `kv_head_contribution`: `score` `[n_kv_heads]`;
- `layernorm_contribution`: `score` `[C]` over the norm's output channels;
- `iterative_channel`: `score` `[D]` int64 (0 = pruned first) and
  `channels_importance_ascending` `[D]` int64;
- `block_influence`: `score` `[]`, one number for the whole layer (fed its `resid_in` and
  `resid_out`, not a module's tensors).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.importance.base import ImportanceMetric
from expc.runtime.importance.block_influence import BlockInfluenceMetric
from expc.runtime.importance.channel_contribution import ChannelContributionMetric
from expc.runtime.importance.iterative_channel import IterativeChannelMetric
from expc.runtime.importance.kv_head_contribution import KvHeadContributionMetric
from expc.runtime.importance.l2_norm import L2NormMetric
from expc.runtime.importance.layernorm_contribution import LayernormContributionMetric

METRICS: dict[str, type[ImportanceMetric]] = {
    cls.name: cls for cls in (L2NormMetric, ChannelContributionMetric, KvHeadContributionMetric,
                              LayernormContributionMetric, IterativeChannelMetric,
                              BlockInfluenceMetric)
}

__all__ = ["METRICS", "ImportanceMetric", "create_metric"]


def create_metric(name: str, *, weight: torch.Tensor | None,
                  params: Mapping[str, object] | None = None, n_kv_heads: int | None = None,
                  head_dim: int | None = None, total_batches: int | None = None
                  ) -> ImportanceMetric:
    """The state object of one metric at one module; bad name or params are ValueErrors."""
    if name not in METRICS:
        raise ValueError(f"unknown importance metric {name!r}; expected one of "
                         f"{', '.join(METRICS)}")
    cls = METRICS[name]
    checked = cls.checked_params(params or {})
    if "weight" in cls.CONTEXT and (weight is None or weight.dim() != 2):
        raise ValueError(f"{name} needs the module's 2-D weight (a Linear)")
    facts = {"weight": weight, "n_kv_heads": n_kv_heads, "head_dim": head_dim,
             "total_batches": total_batches}
    return cls(**checked, **{key: facts[key] for key in cls.CONTEXT})
