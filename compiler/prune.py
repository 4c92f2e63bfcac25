"""Prune: drop every computation that no requested output depends on.

What must run is every tap, every impure node (placeholders among them), and the graph's
output when the caller keeps it; torch.fx's own dead-code elimination erases everything
else, given `must_run` as its test for side effects. Gone are the layers after the last
one anybody reads when the logits are not wanted, and the heads nobody reads — the
`stop_at_layer` speed-up, found from the graph instead of asked for. Without the output
the pruned graph returns None.
"""

from __future__ import annotations

import torch.fx as fx

from expc.compiler.manager import graph_pass
from expc.compiler.taps import is_tap


def must_run(node: fx.Node) -> bool:
    """A root of what is kept: a tap, or what torch.fx counts as impure (inputs, output)."""
    return is_tap(node) or node.is_impure()


@graph_pass
def prune(gm: fx.GraphModule, *, keep_output: bool) -> fx.GraphModule:
    """Erase what no tap (and, if `keep_output`, no output) needs."""
    if not keep_output:
        gm.graph.output_node().args = (None,)
    gm.graph.eliminate_dead_code(is_impure_node=must_run)
    gm.delete_all_unused_submodules()
    return gm
