"""Resolve: find the graph node behind every plan entry and label it.

A capture entry matches the marker of its (site, layer, head); an `attn_pattern` entry
matches the fused attention node of its layer and head (the attention pass expands it); a
metric entry matches the `call_module` node of its module path. The matched node carries its
entries in `node.meta[TAPS_META]` for the passes after this one. An entry that matches no
node — a site or module the architecture does not have — is a diagnostic on its spec line.
"""

from __future__ import annotations

from collections import defaultdict

import torch.fx as fx

from expc.compiler.manager import graph_pass, visit
from expc.compiler.nodes import (
    TAPS_META, attention_label, is_attention, is_marker, marker_label,
)
from expc.compiler.plan import CaptureEntry, MetricEntry, Plan
from expc.spec.diagnostics import Diagnostic, DiagnosticError, Span, error

PlanEntry = CaptureEntry | MetricEntry


def _match_key(node: fx.Node) -> tuple | None:
    if is_marker(node):
        label = marker_label(node)
        return ("site", label.site, label.layer, label.head)
    if is_attention(node):
        label = attention_label(node)
        return ("site", "attn_pattern", label.layer, label.head)
    if node.op == "call_module":
        return ("module", str(node.target))
    return None


def _entry_key(entry: PlanEntry) -> tuple:
    if isinstance(entry, MetricEntry):
        return ("module", entry.module_path)
    return ("site", entry.site, entry.layer, entry.head)


def _missing(entry: PlanEntry) -> Diagnostic:
    span = entry.span or Span(path="<plan>")
    where = f"layer {entry.layer}" if entry.layer is not None else "the model"
    if entry.head is not None:
        where += f" of head {entry.head}"
    if isinstance(entry, MetricEntry):
        what = f"module `{entry.module_path}`"
    else:
        what = f"capture site `{entry.site}` in {where}"
    return error(span, f"the model has no {what} (needed for `{entry.key}`)",
                 code="compile-unresolved")


@graph_pass
def resolve(gm: fx.GraphModule, *, plan: Plan) -> fx.GraphModule:
    """Label each node that a plan entry reads with the entries it serves."""
    wanted: dict[tuple, list[PlanEntry]] = defaultdict(list)
    for entry in (*plan.captures, *plan.metrics):
        wanted[_entry_key(entry)].append(entry)
    for node in visit(gm.graph):
        node.meta.pop(TAPS_META, None)
        key = _match_key(node)
        if key is not None and key in wanted:
            node.meta[TAPS_META] = tuple(wanted.pop(key))
    if wanted:
        raise DiagnosticError(_missing(e) for entries in wanted.values() for e in entries)
    return gm
