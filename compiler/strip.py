"""Strip: remove every marker left in the graph, so unused capture sites cost nothing.

Markers are identities; each is replaced by its input. Run after instrument, whatever
markers remain are the ones nobody asked for, and the graph becomes exactly the plain model
plus the taps.
"""

from __future__ import annotations

import torch.fx as fx

from expc.compiler.manager import graph_pass, visit
from expc.compiler.nodes import is_marker, marker_input


@graph_pass
def strip(gm: fx.GraphModule) -> fx.GraphModule:
    """Replace every marker node by the value it passes through."""
    graph = gm.graph
    for node in visit(graph):
        if is_marker(node):
            node.replace_all_uses_with(marker_input(node))
            graph.erase_node(node)
    return gm
