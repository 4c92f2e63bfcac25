"""Importance results grouped per metric and module, and the pruning candidates.

A metric at a module writes `importance/{metric}/{module}/{field}`: `score` plus extras.
For every metric the lowest scores mark the least important units — channels, or KV heads
for `kv_head_contribution`; for `iterative_channel` the score is the round in which a
channel was pruned, so lowest means pruned first. Those are the pruning candidates.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch

from expc.report.keys import forward_position
from expc.report.run_folder import RunFolder
from expc.spec.run_format import parse_key

CANDIDATES_PER_MODULE = 8
UNIT = {"kv_head_contribution": "kv head"}


@attrs.frozen(kw_only=True)
class Scored:
    """One metric at one module: its fields (`score` and extras)."""

    metric: str
    instance: str  # e.g. head1/layers.3.mlp.down_proj
    role: str  # e.g. mlp.down_proj
    layer: int | None
    head: int | None
    fields: Mapping[str, torch.Tensor]

    @property
    def score(self) -> torch.Tensor | None:
        return self.fields.get("score")

    @property
    def short_label(self) -> str:
        """`L3` in the trunk, `L3 h1` in head 1."""
        layer = "?" if self.layer is None else str(self.layer)
        return f"L{layer}" if self.head is None else f"L{layer} h{self.head}"


def scored_modules(folder: RunFolder) -> dict[str, list[Scored]]:
    """metric -> its modules in forward order."""
    infos = [i for i in map(parse_key, folder.keys) if i.kind == "importance"]
    loaded = folder.tensors(i.key for i in infos)
    grouped: dict[tuple[str, str], dict] = {}
    for info in sorted(infos, key=lambda i: (forward_position(i), i.key)):
        slot = grouped.setdefault((info.name, info.instance), {"info": info, "fields": {}})
        slot["fields"][info.field] = loaded[info.key]
    by_metric: dict[str, list[Scored]] = {}
    for (metric, instance), slot in grouped.items():
        info = slot["info"]
        by_metric.setdefault(metric, []).append(Scored(
            metric=metric, instance=instance, role=info.role, layer=info.layer,
            head=info.head, fields=slot["fields"]))
    return dict(sorted(by_metric.items()))


def lowest(score: torch.Tensor, k: int = CANDIDATES_PER_MODULE) -> list[tuple[int, float]]:
    """(index, score) of the k lowest finite scores of a 1-D score, lowest first."""
    flat = score.double().flatten()
    finite = torch.nonzero(torch.isfinite(flat)).flatten()
    order = finite[torch.argsort(flat[finite], stable=True)][:k]
    return [(int(i), float(flat[i])) for i in order]


def pruning_candidates(by_metric: Mapping[str, list[Scored]]) -> list[dict]:
    """The lowest-scoring units of every metric and module, as JSON-ready rows."""
    rows = []
    for metric, modules in by_metric.items():
        for scored in modules:
            if scored.score is None:
                continue
            rows.append({
                "metric": metric, "module": scored.instance, "layer": scored.layer,
                "head": scored.head, "unit": UNIT.get(metric, "channel"),
                "lowest": [{"index": i, "score": s} for i, s in lowest(scored.score)],
            })
    return rows
