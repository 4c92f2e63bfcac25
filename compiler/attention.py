"""Attention: explicit softmax only where an attention pattern is captured.

Every layer's attention is one fused `markers.attention` node (scaled-dot-product
attention). At the layers whose `attn_pattern` the plan reads (labelled by resolve), this
pass writes the attention out — `attention_weights(q, k, mask, scale) @ v` — and puts an
`attn_pattern` marker on the weights, permuted to `[B, S_q, n_heads, S_k]` so that a
pattern reaches its sink with the sequence in dim 1 like every other capture. Everywhere
else the fused kernel stays.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from expc.compiler.manager import graph_pass, visit
from expc.compiler.nodes import TAPS_META, attention_arguments, is_attention
from expc.models import markers


@graph_pass
def explicit_attention(gm: fx.GraphModule) -> fx.GraphModule:
    """Replace the labelled fused attention nodes by softmax weights, a matmul and a marker."""
    graph = gm.graph
    for node in visit(graph):
        if not (is_attention(node) and node.meta.get(TAPS_META)):
            continue
        args = attention_arguments(node)
        with graph.inserting_before(node):
            weights = graph.call_function(  # [B, n_heads, S_q, S_k]
                markers.attention_weights,
                (args["q"], args["k"], args["attn_mask"], args["scale"], args["softcap"]))
            output = graph.call_function(torch.matmul, (weights, args["v"]))  # [B, n_heads, S_q, d]
            pattern = graph.call_method("permute", (weights, 0, 2, 1, 3))  # [B, S_q, n_heads, S_k]
            marker = graph.call_function(
                markers.mark, (pattern, "attn_pattern", args["layer"], args["head"]))
        marker.meta[TAPS_META] = node.meta[TAPS_META]
        node.replace_all_uses_with(output)
        graph.erase_node(node)
    return gm
