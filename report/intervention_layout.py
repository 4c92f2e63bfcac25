"""Which heads and layers each intervention of the IR covers, and whether the run is a
layer sweep.

The manifest's `ir.interventions` holds the experiment's `intervene` statements as
`spec.to_json` writes them: selectors as their text (`*`, `3`, `1:3, 5`). They are resolved
here with the model's layer count and the Hydra head count from the manifest, by the
language's own `IndexSelector.resolve`. A layer sweep is a run whose intervened heads each
change exactly one layer, a different one per head, with statements that are otherwise the
same (same target, operation, units and positions): then the effects are drawn as a line
over layers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import attrs

from expc.report.intervention_words import statement
from expc.spec.ir import IndexSelector, Slice


@attrs.frozen(kw_only=True)
class InterventionNode:
    """One `intervene` statement of the IR and what it covers."""

    index: int  # its place among the experiment's interventions
    node: Mapping  # the statement as `spec.to_json` wrote it
    heads: tuple[int | None, ...]  # (None,) without a split
    layers: tuple[int, ...]

    @property
    def target(self) -> str:
        return str(self.node.get("target", ""))

    @property
    def statement(self) -> str:
        """The statement as it would be written in the language."""
        return statement(self.node)

    @property
    def shape(self) -> str:
        """The statement without its layers and heads, to compare statements by."""
        rest = {k: v for k, v in self.node.items() if k not in ("layers", "heads")}
        return json.dumps(rest, sort_keys=True, default=str)

    def covers(self, target: str, head: int | None, layer: int | None) -> bool:
        return target == self.target and head in self.heads and layer in self.layers


def _item(text: str) -> int | Slice:
    if ":" in text:
        start, _, stop = text.partition(":")
        return Slice(start=int(start) if start.strip() else None,
                     stop=int(stop) if stop.strip() else None)
    return int(text)


def selector_indices(text: object, n: int) -> tuple[int, ...]:
    """The indices a selector's text selects among `n` (`*`, `2`, `-1`, `1:3, 5`); text that
    is not a selector, or an index out of range, selects nothing."""
    if not isinstance(text, str) or n <= 0:
        return ()
    text = text.strip().removeprefix("[").removesuffix("]").strip()
    try:
        selector = (IndexSelector(all=True) if text == "*" else
                    IndexSelector(items=tuple(_item(part.strip()) for part in text.split(","))))
        return selector.resolve(n)
    except (ValueError, IndexError):
        return ()


def _count(manifest: Mapping, field: str) -> int:
    value = (manifest.get("model") or {}).get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def intervention_nodes(manifest: Mapping) -> list[InterventionNode]:
    """The IR's interventions with the heads and layers each covers."""
    nodes = (manifest.get("ir") or {}).get("interventions") or []
    hydra = (manifest.get("model") or {}).get("hydra") or {}
    n_heads = hydra.get("heads") if isinstance(hydra.get("heads"), int) else 0
    n_layers = _count(manifest, "n_layers")
    out = []
    for index, node in enumerate(nodes):
        if not isinstance(node, Mapping):
            continue
        heads = (selector_indices(node.get("heads"), n_heads) if node.get("heads") is not None
                 else (None,))
        out.append(InterventionNode(index=index, node=node, heads=heads,
                                    layers=selector_indices(node.get("layers"), n_layers)))
    return out


def layer_sweep(nodes: list[InterventionNode]) -> dict[int, int]:
    """head -> the one layer it intervenes on, when the run is a layer sweep (at least two
    heads, each changing one layer, a different one, by statements that differ only in their
    layers and heads); else empty."""
    per_head: dict[int, list[InterventionNode]] = {}
    for node in nodes:
        for head in node.heads:
            if head is None:
                return {}
            per_head.setdefault(head, []).append(node)
    layers: dict[int, int] = {}
    shapes = set()
    for head, covering in per_head.items():
        head_layers = {layer for node in covering for layer in node.layers}
        if len(head_layers) != 1:
            return {}
        layers[head] = head_layers.pop()
        shapes.add(tuple(sorted(node.shape for node in covering)))
    if len(layers) < 2 or len(shapes) != 1 or len(set(layers.values())) != len(layers):
        return {}
    return dict(sorted(layers.items()))
