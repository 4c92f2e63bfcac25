"""Edit modules: the graph nodes through which an intervention changes a value.

An edit is a `call_module` node whose module hands one tensor to the runtime's edit function
and returns what that gives back, so everything downstream of it is computed from the edited
value. Every edit lives under the `expc_edits` submodule, named after its intervention key
(`self.expc_edits.e0_intervention_head1_mlp_out_3(...)`), so `expc compile --emit graph`
shows where each intervention sits. Unlike taps, edits are pure: an edit nobody downstream
reads is pruned with the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.fx as fx

from expc.compiler.graph_break import eager_under_compile
from expc.compiler.taps import add_numbered

EDITS_ROOT = "expc_edits"


@eager_under_compile  # a graph break: edits read run state (sources, selections) eagerly
class Edit(torch.nn.Module):
    """Calls one edit function; the intervention key it serves is kept for printing."""

    def __init__(self, *, key: str, edit: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.key = key
        self.edit = edit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.edit(x)

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


def unchanged(x: torch.Tensor) -> torch.Tensor:
    """The edit used when the caller gives none (e.g. for `expc compile --emit`)."""
    return x


def add_edit(gm: fx.GraphModule, *, key: str, edit: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """Register an `Edit` on `gm` and return its target for a `call_module` node."""
    return add_numbered(gm, Edit(key=key, edit=edit), root=EDITS_ROOT, letter="e", key=key)


def is_edit(node: fx.Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith(EDITS_ROOT + ".")
