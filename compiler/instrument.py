"""Instrument: put a tap behind every labelled node, feeding the caller's sinks.

A labelled marker is replaced by its input, and each of its entries gets a tap called with
that input (`sink(hidden)`); a labelled module gets, per entry, a tap called with the
module's input and output (`sink(x_in, y_out)`), which is all any importance metric needs
(the weight it reads from the module itself). Where an intervention edits the module's
input or output, the tap reads the edited value, the one the model goes on with. Taps return
nothing, so the values flowing on are exactly those of the uninstrumented graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch.fx as fx

from expc.compiler.manager import graph_pass, visit
from expc.compiler.nodes import TAPS_META, is_marker, marker_input, module_output
from expc.compiler.taps import add_tap, callback_for, ignore


@graph_pass
def instrument(gm: fx.GraphModule, *, sinks: Mapping[str, Callable] | None) -> fx.GraphModule:
    """Tap every labelled node; `sinks=None` taps into no-op sinks (for printing)."""
    graph = gm.graph
    for node in visit(graph):
        entries = node.meta.get(TAPS_META, ())
        if not entries:
            continue
        if is_marker(node):
            fed: tuple = (marker_input(node),)
            anchor = node
        else:
            fed = (node.args[0], module_output(node))
            anchor = fed[1]
        for entry in entries:
            sink = callback_for(sinks, entry.key, default=ignore, what="sink")
            target = add_tap(gm, key=entry.key, sink=sink)
            with graph.inserting_after(anchor):
                anchor = graph.call_module(target, fed)
        if is_marker(node):
            node.replace_all_uses_with(fed[0])
            graph.erase_node(node)
    return gm
