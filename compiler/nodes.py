"""Read the marker and attention nodes that `expc.models.markers` leaves in a traced graph.

A marker is a `call_function` node of `markers.mark(x, site, layer, head)`; the fused
attention leaf is a node of `markers.attention(q, k, v, attn_mask, scale, layer, head)`.
Their labels may be passed positionally or by keyword, so every pass reads them through
these helpers instead of indexing `node.args` itself.
"""

from __future__ import annotations

import inspect

import attrs
import torch.fx as fx

from expc.models import markers

# Where resolve leaves the plan entries a node serves, for the passes after it.
TAPS_META = "expc_taps"

_MARK_SIGNATURE = inspect.signature(markers.mark)
_ATTENTION_SIGNATURE = inspect.signature(markers.attention)


@attrs.frozen(kw_only=True)
class SiteLabel:
    """What a marker or attention node stands for: site name, global layer, Hydra head."""

    site: str
    layer: int | None
    head: int | None


def is_marker(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is markers.mark


def is_attention(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is markers.attention


def marker_arguments(node: fx.Node) -> dict:
    """The arguments of a `mark` node by parameter name."""
    return dict(_MARK_SIGNATURE.bind(*node.args, **node.kwargs).arguments)


def attention_arguments(node: fx.Node) -> dict:
    """The arguments of an `attention` node by parameter name (defaults filled in)."""
    bound = _ATTENTION_SIGNATURE.bind(*node.args, **node.kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def marker_label(node: fx.Node) -> SiteLabel:
    args = marker_arguments(node)
    return SiteLabel(site=args["site"], layer=args["layer"], head=args["head"])


def attention_label(node: fx.Node) -> SiteLabel:
    args = attention_arguments(node)
    return SiteLabel(site="attention", layer=args["layer"], head=args["head"])


def marker_input(node: fx.Node) -> fx.Node:
    """The value a marker passes through unchanged."""
    return marker_arguments(node)["x"]


# Where `intervene` leaves the last edit of a module's output (a norm target), so a metric
# tap on that module reads the output its users see.
EDITED_OUTPUT_META = "expc_edited_output"


def module_output(node: fx.Node) -> fx.Node:
    """The value a `call_module` node's users read: its output, or the last edit of it."""
    return node.meta.get(EDITED_OUTPUT_META, node)
