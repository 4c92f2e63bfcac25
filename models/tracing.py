"""torch.fx tracing of a `HydraTransformer`.

`trace` keeps `nn.Linear`, `nn.Embedding` and the norm modules as leaves, so the graph
holds `call_module` nodes named by module path (`heads.1.layers.3.mlp.down_proj`) that
importance metrics hook onto; `markers.mark` and `markers.attention` stay single
`call_function` nodes (the compiler reads and strips them: `expc.compiler.nodes`,
`expc.compiler.strip`).
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from expc.models.layers import RMSNorm

DATA_INPUTS = ("input_ids", "attention_mask")
LEAF_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Embedding, nn.LayerNorm, RMSNorm)


class HydraTracer(torch.fx.Tracer):
    """Linear, embedding and norm modules stay whole; everything else is traced through."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, LEAF_TYPES)


def trace(model: nn.Module, *, head_indices=None, last_token_only: bool = False) -> torch.fx.GraphModule:
    """Trace `model.forward(input_ids, attention_mask)` with the head choice fixed.

    The graph takes `input_ids [B, S]` and `attention_mask [B, S]` and returns the logits
    `[n_selected, B, S_out, V]`.
    """
    tracer = HydraTracer()
    graph = tracer.trace(model, concrete_args={
        "head_indices": head_indices, "last_token_only": last_token_only,
    })
    _drop_fixed_arguments(graph)
    return torch.fx.GraphModule(tracer.root, graph, model.__class__.__name__)


def _drop_fixed_arguments(graph: torch.fx.Graph) -> None:
    """Leave only `(input_ids, attention_mask)` as inputs.

    fx keeps the fixed (concrete) arguments as placeholders, each guarded by `_assert`
    nodes and behind a pytree signature; none of them feeds the computation, so they and
    everything hanging off them are removed and the signature made plain again.
    """
    doomed: list[torch.fx.Node] = []
    pending = [n for n in graph.nodes if n.op == "placeholder" and n.target not in DATA_INPUTS]
    while pending:
        node = pending.pop()
        if node not in doomed:
            doomed.append(node)
            pending.extend(node.users)
    if any(node.op == "output" for node in doomed):
        raise RuntimeError("a fixed trace argument reaches the model output")
    for node in reversed(list(graph.nodes)):
        if node in doomed:
            graph.erase_node(node)
    graph.set_codegen(torch.fx.graph.CodeGen())
    output = next(node for node in graph.nodes if node.op == "output")
    (result,) = output.args
    if isinstance(result, (list, tuple)):  # the pytree signature flattened the one output
        (tensor,) = result
        output.args = (tensor,)

