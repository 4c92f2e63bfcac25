"""Logit lens: `lens[L]` is `lm_head(final_norm(resid_out[L]))`, built only where captured.

The models mark no `lens`: the projection of every layer onto the vocabulary would cost a
`[B, S, V]` matmul per layer. This pass, first in the pipeline, adds it at the layers (and
heads) the plan captures: behind the `resid_out` marker of (layer, head) it calls the
model's own final norm and LM head (the same modules the logits go through, shared by every
head) and puts a `lens` marker on the result, which resolve then labels like any other. It
reads the marker itself, not the marker's input, so an intervention on `resid_out[L]` (put
between the marker and its input by `intervene`) shows in `lens[L]`. A model without an LM
head gets no lens marker, and resolve reports the capture on its spec line.
"""

from __future__ import annotations

import torch.fx as fx

from expc.compiler.manager import graph_pass, visit
from expc.compiler.nodes import is_marker, marker_label
from expc.compiler.plan import Plan
from expc.models import markers
from expc.spec.vocabulary import LENS_SITE

FINAL_NORM, LM_HEAD = "norm", "lm_head"  # the `HydraTransformer` modules the logits go through


def _has_lm_head(gm: fx.GraphModule) -> bool:
    return any(n.op == "call_module" and n.target == LM_HEAD for n in gm.graph.nodes)


@graph_pass
def logit_lens(gm: fx.GraphModule, *, plan: Plan) -> fx.GraphModule:
    """Add `lens` markers behind the `resid_out` markers of the planned lens captures."""
    wanted = {(e.layer, e.head) for e in plan.captures if e.site == LENS_SITE}
    if not wanted or not _has_lm_head(gm):
        return gm
    graph = gm.graph
    for node in visit(graph):
        if not is_marker(node):
            continue
        label = marker_label(node)
        if label.site != "resid_out" or (label.layer, label.head) not in wanted:
            continue
        with graph.inserting_before(node.next):  # in order, right after the marker
            normed = graph.call_module(FINAL_NORM, (node,))  # [B, S, H]
            logits = graph.call_module(LM_HEAD, (normed,))  # [B, S, V]
            graph.call_function(markers.mark, (logits, LENS_SITE, label.layer, label.head))
    return gm
