"""Intervene: put an edit where each intervention changes the model, inside its head only.

Per `InterventionEntry`, in plan order, one `Edit` node (compiler/edits.py) is inserted:
- a site target: between the marker and its input, so the marker — and any capture of it,
  any effect read at it — sees the edited value, and everything downstream is computed
  from it;
- a linear module: on the module's first argument (its input channels);
- a norm module: on its output; every other user of the output reads the edit instead (and
  `module_output` tells instrument so, for a metric at the same norm).
Two interventions on one node chain in plan order. A head without an intervention gets no
node at all: its graph, like the trunk's, is exactly the one without this pass. It runs
after `resolve` and before `instrument`, which replaces the markers it looks for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch.fx as fx

from expc.compiler.edits import add_edit, unchanged
from expc.compiler.manager import graph_pass
from expc.compiler.nodes import EDITED_OUTPUT_META, marker_input, module_output
from expc.compiler.plan import InterventionEntry, Plan
from expc.compiler.resolve import locate, module_key, site_key, unresolved
from expc.compiler.taps import callback_for
from expc.spec.diagnostics import DiagnosticError


def _target_key(entry: InterventionEntry) -> tuple:
    if entry.kind == "site":
        return site_key(entry.site, entry.layer, entry.head)
    return module_key(entry.module_path)


def _edit_input(graph: fx.Graph, node: fx.Node, value: fx.Node, target: str) -> None:
    """Feed `node` the edit of its input `value` instead of `value`."""
    with graph.inserting_before(node):
        edited = graph.call_module(target, (value,))
    node.replace_input_with(value, edited)


def _edit_output(graph: fx.Graph, node: fx.Node, target: str) -> None:
    """Make every user of `node`'s (possibly already edited) output read its edit."""
    output = module_output(node)
    with graph.inserting_after(output):
        edited = graph.call_module(target, (output,))
    output.replace_all_uses_with(edited, delete_user_cb=lambda user: user is not edited)
    node.meta[EDITED_OUTPUT_META] = edited


@graph_pass
def intervene(gm: fx.GraphModule, *, plan: Plan,
              edits: Mapping[str, Callable] | None) -> fx.GraphModule:
    """Insert one edit per intervention entry; `edits=None` inserts identity edits."""
    graph = gm.graph
    found = locate(graph, (_target_key(e) for e in plan.interventions))
    missing = [e for e in plan.interventions if _target_key(e) not in found]
    if missing:
        raise DiagnosticError(unresolved(e.span, _target_key(e), e.key) for e in missing)
    for entry in plan.interventions:
        node = found[_target_key(entry)]
        target = add_edit(gm, key=entry.key, edit=callback_for(
            edits, entry.key, default=unchanged, what="edit"))
        if entry.kind == "site":
            _edit_input(graph, node, marker_input(node), target)
        elif entry.kind == "linear":
            _edit_input(graph, node, node.args[0], target)
        else:
            _edit_output(graph, node, target)
    return gm
