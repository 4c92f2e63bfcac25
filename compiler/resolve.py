"""Resolve: find the graph node behind every plan entry and label it.

A capture entry matches the marker of its (site, layer, head); an `attn_pattern` entry
matches the fused attention node of its layer and head (the attention pass expands it); a
metric entry matches the `call_module` node of its module path (a metric of whole layers
reads markers instead, and `effect_taps` finds them). The matched node carries its
entries in `node.meta[TAPS_META]` for the passes after this one. An entry that matches no
node — a site or module the architecture does not have — is a diagnostic on its spec line.

The passes that rewrite or tap other nodes (`intervene`, `effect_taps`) find them with the
same match keys (`site_key`, `module_key`) through `locate`, and report a missing one with
`unresolved`, so every plan entry resolves one way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch.fx as fx

from expc.compiler.manager import graph_pass, visit
from expc.compiler.nodes import (
    TAPS_META, attention_label, is_attention, is_marker, marker_label,
)
from expc.compiler.plan import CaptureEntry, MetricEntry, Plan
from expc.spec.diagnostics import Diagnostic, DiagnosticError, Span, error

PlanEntry = CaptureEntry | MetricEntry


def site_key(site: str, layer: int | None, head: int | None) -> tuple:
    """What a marker of (site, layer, head) matches."""
    return ("site", site, layer, head)


def module_key(path: str) -> tuple:
    """What the `call_module` node of the module at `path` matches."""
    return ("module", path)


def _attention_key(layer: int | None, head: int | None) -> tuple:
    return ("attention", layer, head)


def _match_key(node: fx.Node) -> tuple | None:
    if is_marker(node):
        label = marker_label(node)
        return site_key(label.site, label.layer, label.head)
    if is_attention(node):
        label = attention_label(node)
        return _attention_key(label.layer, label.head)
    if node.op == "call_module":
        return module_key(str(node.target))
    return None


def _entry_key(entry: PlanEntry) -> tuple:
    if isinstance(entry, MetricEntry):
        return module_key(entry.module_path)
    if entry.site == "attn_pattern":  # its marker appears when the attention is expanded
        return _attention_key(entry.layer, entry.head)
    return site_key(entry.site, entry.layer, entry.head)


def locate(graph: fx.Graph, keys: Iterable[tuple]) -> dict[tuple, fx.Node]:
    """The first node matching each of `keys` (markers by `site_key`, modules by
    `module_key`); keys that match nothing are left out."""
    wanted = set(keys)
    found: dict[tuple, fx.Node] = {}
    for node in visit(graph):
        key = _match_key(node)
        if key in wanted and key not in found:
            found[key] = node
    return found


def unresolved(span: Span | None, key: tuple, needed_for: str) -> Diagnostic:
    """The diagnostic for a node that the entry keyed `needed_for` needs and the model lacks."""
    if key[0] == "module":
        what = f"module `{key[1]}`"
    else:
        _, layer, head = key[-3:]
        where = f"layer {layer}" if layer is not None else "the model"
        if head is not None:
            where += f" of head {head}"
        site = "attn_pattern" if key[0] == "attention" else key[1]
        what = f"capture site `{site}` in {where}"
    return error(span or Span(path="<plan>"),
                 f"the model has no {what} (needed for `{needed_for}`)", code="compile-unresolved")


@graph_pass
def resolve(gm: fx.GraphModule, *, plan: Plan) -> fx.GraphModule:
    """Label each node that a plan entry reads with the entries it serves."""
    wanted: dict[tuple, list[PlanEntry]] = defaultdict(list)
    for entry in (*plan.captures, *plan.module_metrics):  # whole layers: effect_taps
        wanted[_entry_key(entry)].append(entry)
    for node in visit(gm.graph):
        node.meta.pop(TAPS_META, None)
        key = _match_key(node)
        if key is not None and key in wanted:
            node.meta[TAPS_META] = tuple(wanted.pop(key))
    if wanted:
        raise DiagnosticError(unresolved(e.span, key, e.key)
                              for key, entries in wanted.items() for e in entries)
    return gm
