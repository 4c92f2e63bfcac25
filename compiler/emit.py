"""What `expc compile FILE --emit graph|code|dot` prints.

`graph` is the rewritten torch.fx graph node by node, `code` the Python that torch.fx
generates from it (what actually runs), `dot` a Graphviz drawing of the plan: the trunk's
layers fanning out into each head's layers, every result key hanging off the layer or
site it reads (an effect off its head's and its reference's), every intervention pointing
at the layer it changes, and the layers nothing needs drawn dashed as pruned. The graph views are
compiled on the meta device with no-op sinks, so no weights are read.
"""

from __future__ import annotations

import json

import networkx as nx
import torch.fx as fx

from expc.compiler.pipeline import compile_plan
from expc.compiler.plan import CaptureEntry, EffectEntry, InterventionEntry, Plan, build_plan
from expc.models.loading import meta_model
from expc.spec import ir

EMITS = ("graph", "code", "dot")


def emit_graph(gm: fx.GraphModule) -> str:
    return str(gm.graph)


def emit_code(gm: fx.GraphModule) -> str:
    return gm.code.strip() + "\n"


def _place(layer: int | None, head: int | None, site: str) -> str:
    """The drawing's node for what an entry reads."""
    prefix = "" if head is None else f"head{head}/"
    if layer is None:
        return site if site == "embed" else f"{prefix}{site}"
    return f"{prefix}layers.{layer}"


def _effect_places(plan: Plan, entry: EffectEntry) -> list[str]:
    """The places an effect reads: its head's, then its reference's (cosine: `at`'s layer)."""
    heads = [entry.head] if entry.reference is None else [entry.head, entry.reference]
    at_layer = entry.effect.at_layer
    if at_layer is None:
        return [_place(None, h if plan.layout.is_split else None, "logits") for h in heads]
    return [_place(at_layer, None if at_layer < plan.layout.trunk else h, "") for h in heads]


def _operation_text(intervention: ir.Intervention) -> str:
    """The intervention's operation, units and positions, in the language's words."""
    op = intervention.operation
    if op.kind == "scale":
        words = [f"scale = {op.scale}"]
    elif op.kind == "add":
        words = [f'add = vector(run = "{op.run}", key = "{op.key}")']
        words += [] if op.scale is None else [f"scale = {op.scale}"]
    else:
        words = ["set = zero" if op.kind == "zero" else f'set = {op.kind}(run = "{op.run}")']
    if intervention.channels is not None:
        words.append(f"channels = {intervention.channels.kind}")
    if intervention.positions.kind != "all":
        words.append(f"positions = {intervention.positions.kind}")
    return ", ".join(words)


def _add_interventions(dag: nx.DiGraph, interventions: tuple[InterventionEntry, ...]) -> None:
    """Each intervention as a node pointing at the layer it changes."""
    for entry in interventions:
        dag.add_node(entry.key, kind="intervention", detail=_operation_text(entry.intervention))
        dag.add_edge(entry.key, _place(entry.layer, entry.head, ""), kind="edit")


def plan_graph(plan: Plan) -> nx.DiGraph:
    """The plan as a DAG: model places (embed, layers, final_norm, logits), result keys and
    interventions."""
    layout = plan.layout
    heads = range(layout.n_heads) if layout.is_split else (None,)
    dag = nx.DiGraph()
    trunk = ["embed", *(f"layers.{L}" for L in range(layout.trunk))]
    nx.add_path(dag, trunk, kind="flow")
    for head in heads:
        prefix = "" if head is None else f"head{head}/"
        branch = [f"{prefix}layers.{L}" for L in layout.head_layers]
        nx.add_path(dag, [trunk[-1], *branch, f"{prefix}final_norm", f"{prefix}logits"],
                    kind="flow")
    for node in list(dag.nodes):
        dag.nodes[node]["kind"] = "place"
    for entry in (*plan.captures, *plan.metrics):
        site = entry.site if isinstance(entry, CaptureEntry) else entry.module
        if isinstance(entry, CaptureEntry):
            mask = f"(mask = {entry.mask})" if entry.mask else ""
            detail = f"{entry.mode}{mask}"
        else:
            detail = ", ".join(f"{k} = {v}" for k, v in entry.params.items())
        dag.add_node(entry.key, kind="result", detail=detail)
        dag.add_edge(_place(entry.layer, entry.head, site), entry.key, kind="tap")
    for entry in plan.effects:
        versus = "" if entry.reference is None else f" vs head{entry.reference}"
        dag.add_node(entry.key, kind="result", detail=f"{entry.metric}{versus}")
        for place in _effect_places(plan, entry):
            dag.add_edge(place, entry.key, kind="tap")
    results = [n for n, kind in dag.nodes(data="kind") if kind == "result"]
    needed = set(results).union(*(nx.ancestors(dag, r) for r in results))
    for node in dag.nodes:
        dag.nodes[node]["needed"] = node in needed
    _add_interventions(dag, plan.interventions)
    return dag


def _quote(text: str) -> str:
    """A DOT string: JSON's escaping, whose `\n` Graphviz also reads as a line break."""
    return json.dumps(text)


def to_dot(dag: nx.DiGraph, *, name: str) -> str:
    lines = [f"digraph {_quote(name)} {{", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for node, data in dag.nodes(data=True):
        if data["kind"] in ("result", "intervention"):
            label = node + (f"\n{data['detail']}" if data["detail"] else "")
            shape = "note" if data["kind"] == "result" else "cds, color=firebrick"
            attrs = f"shape={shape}, label={_quote(label)}"
        elif data["needed"]:
            attrs = "shape=box"
        else:
            attrs = 'shape=box, style=dashed, color=gray, fontcolor=gray, xlabel="pruned"'
        lines.append(f"  {_quote(node)} [{attrs}];")
    for source, target, data in dag.edges(data=True):
        style = {"tap": " [style=dotted]", "edit": " [color=firebrick]"}.get(data["kind"], "")
        lines.append(f"  {_quote(source)} -> {_quote(target)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def emit_dot(plan: Plan, *, name: str = "plan") -> str:
    return to_dot(plan_graph(plan), name=name)


def emit(experiment: ir.Experiment, what: str) -> str:
    """The text `expc compile --emit WHAT` prints for a checked experiment."""
    model = meta_model(experiment.model.path, experiment.hydra, experiment.interventions)
    plan = build_plan(experiment, n_layers=model.config.n_layers)
    if what == "dot":
        return emit_dot(plan, name=experiment.name)
    gm = compile_plan(plan, model).graph_module
    return emit_graph(gm) if what == "graph" else emit_code(gm)
