"""Instrument: put a tap behind every labelled node, feeding the caller's sinks.

A labelled marker is replaced by its input, and each of its entries gets a tap called with
that input (`sink(hidden)`); a labelled module gets, per entry, a tap called with the
module's input and output (`sink(x_in, y_out)`), which is all any importance metric needs
(the weight it reads from the module itself). Taps return nothing, so the values flowing on
are exactly those of the uninstrumented graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch.fx as fx

from expc.compiler.manager import graph_pass, visit
from expc.compiler.nodes import TAPS_META, is_marker, marker_input
from expc.compiler.taps import add_tap, ignore


class MissingSinkError(KeyError):
    """The caller's sinks lack a key that the plan produces."""


def _sink(sinks: Mapping[str, Callable] | None, key: str) -> Callable:
    if sinks is None:
        return ignore
    if key not in sinks:
        raise MissingSinkError(f"no sink given for result key `{key}`")
    return sinks[key]


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
        else:
            fed = (node.args[0], node)
        anchor = node
        for entry in entries:
            target = add_tap(gm, key=entry.key, sink=_sink(sinks, entry.key))
            with graph.inserting_after(anchor):
                anchor = graph.call_module(target, fed)
        if is_marker(node):
            node.replace_all_uses_with(fed[0])
            graph.erase_node(node)
    return gm
