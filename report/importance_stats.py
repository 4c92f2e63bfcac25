"""Importance results grouped per metric and module, and the pruning candidates.

A metric at a module writes `importance/{metric}/{module}/{field}`: `score` plus extras.
For every metric the lowest scores mark the least important units — channels, or KV heads
for `kv_head_contribution`; for `iterative_channel` the score is the round in which a
channel was pruned, so lowest means pruned first. Those are the pruning candidates.
A metric of whole layers (`block_influence`, module `layers.{L}`) has one score `[]` per
layer: its units are the layers of one model, the trunk's followed by one head's
(`layer_series`), and its candidates are that model's lowest-scored layers.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch

from expc.report.keys import forward_position
from expc.report.run_folder import RunFolder
from expc.spec.run_format import parse_key
from expc.spec.vocabulary import LAYER_TARGET

CANDIDATES_PER_MODULE = 8
UNIT = {"kv_head_contribution": "kv head", "block_influence": "layer"}


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
    def whole_layer(self) -> bool:
        """A score of the whole layer (one number), not of its channels or heads."""
        return self.role == LAYER_TARGET and self.score is not None and self.score.dim() == 0

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


def layer_series(modules: list[Scored]) -> dict[int | None, list[Scored]]:
    """A whole-layer metric's scores per model, in layer order: without heads one series
    (None); with heads one per head h, the trunk's layers followed by head h's."""
    layers = [m for m in modules if m.whole_layer]
    trunk = sorted((m for m in layers if m.head is None), key=lambda m: m.layer or 0)
    heads = sorted({m.head for m in layers if m.head is not None})
    if not heads:
        return {None: trunk} if trunk else {}
    return {h: trunk + sorted((m for m in layers if m.head == h), key=lambda m: m.layer or 0)
            for h in heads}


def _layer_rows(metric: str, modules: list[Scored]) -> list[dict]:
    """Per model (head), its layers lowest-scored first: the layers to drop first."""
    rows = []
    for head, series in layer_series(modules).items():
        scores = torch.stack([m.score.double() for m in series])
        rows.append({
            "metric": metric, "module": "layers" if head is None else f"head{head}/layers",
            "layer": None, "head": head, "unit": UNIT.get(metric, "layer"),
            "lowest": [{"index": series[i].layer, "score": s} for i, s in lowest(scores)],
        })
    return rows


def pruning_candidates(by_metric: Mapping[str, list[Scored]]) -> list[dict]:
    """The lowest-scoring units of every metric and module (of every model, for a metric of
    whole layers), as JSON-ready rows."""
    rows = []
    for metric, modules in by_metric.items():
        rows.extend(_layer_rows(metric, modules))
        for scored in modules:
            if scored.score is None or scored.whole_layer:
                continue
            rows.append({
                "metric": metric, "module": scored.instance, "layer": scored.layer,
                "head": scored.head, "unit": UNIT.get(metric, "channel"),
                "lowest": [{"index": i, "score": s} for i, s in lowest(scored.score)],
            })
    return rows
