"""Prune: drop every computation that no requested output depends on.

The graph becomes a networkx DiGraph (an edge from each node to each of its users); what
must run is every tap, every impure node, and the graph's output when the caller keeps it —
plus all their ancestors. Everything else is erased: the layers after the last one anybody
reads when the logits are not wanted, and the heads nobody reads. This is the
`stop_at_layer` speed-up, found from the graph instead of asked for. Without the output the
pruned graph returns None.
"""

from __future__ import annotations

import networkx as nx
import torch.fx as fx

from expc.compiler.manager import graph_pass, visit
from expc.compiler.taps import is_tap


def dependency_graph(graph: fx.Graph) -> nx.DiGraph:
    """Nodes of `graph` with an edge from every node to each of its users."""
    dag = nx.DiGraph()
    for node in graph.nodes:
        dag.add_node(node)
        dag.add_edges_from((node, user) for user in node.users)
    return dag


def needed_nodes(graph: fx.Graph) -> set[fx.Node]:
    """The taps, impure nodes and the output, with everything they depend on."""
    dag = dependency_graph(graph)
    roots = [n for n in graph.nodes if n.op == "output" or is_tap(n) or n.is_impure()]
    wanted = "everything a root needs"  # one search from a node every root feeds
    dag.add_edges_from((root, wanted) for root in roots)
    return nx.ancestors(dag, wanted)


@graph_pass
def prune(gm: fx.GraphModule, *, keep_output: bool) -> fx.GraphModule:
    """Erase what no tap (and, if `keep_output`, no output) needs."""
    graph = gm.graph
    if not keep_output:
        graph.output_node().args = (None,)
    needed = needed_nodes(graph)
    for node in visit(graph, reverse=True):
        if node not in needed and node.op != "placeholder":
            graph.erase_node(node)
    gm.delete_all_unused_submodules()
    return gm
