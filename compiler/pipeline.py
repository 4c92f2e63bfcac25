"""The compiler's entry points: plan, trace, and run the passes in order.

`compile_experiment` is what the runtime calls; `compile_plan` does the same from a plan
(tests, benchmarks). Pass order matters: logit_lens adds the `lens` markers the plan
captures (norm and LM head behind `resid_out`), only adding nodes; resolve labels the nodes
(so a missing site is reported before anything changes); intervene puts the edits between
markers and their inputs (and at module inputs and outputs) while every marker is still in
the graph, and before any tap exists, so every capture, metric and effect downstream reads
the edited values; attention expands the labelled attention nodes into explicit softmax
with a pattern marker (an edit upstream of it is already in place); effect_taps taps the
logits (or site) markers of each head and its reference, and must see the markers before
instrument and strip replace them; instrument taps every labelled node; strip removes the
markers nobody reads; prune drops what nothing needs, last, so the taps of every earlier
pass keep what they read alive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import torch
import torch.fx as fx

from expc.compiler.attention import explicit_attention
from expc.compiler.effect_taps import effect_taps
from expc.compiler.instrument import instrument
from expc.compiler.intervene import intervene
from expc.compiler.lens import logit_lens
from expc.compiler.manager import GraphPass, run_passes
from expc.compiler.plan import Plan, build_plan
from expc.compiler.prune import prune
from expc.compiler.resolve import resolve
from expc.compiler.strip import strip
from expc.models.tracing import trace
from expc.spec import ir

@attrs.frozen(kw_only=True)
class Compiled:
    """The instrumented graph and the plan whose keys its taps feed.

    Call `graph_module(*inputs)` like the model; it returns the model's output when
    `returns_output`, else None (the output was pruned away).
    """

    graph_module: fx.GraphModule
    plan: Plan
    returns_output: bool


def passes_for(plan: Plan, sinks: Mapping[str, Callable] | None, *, keep_output: bool,
               edits: Mapping[str, Callable] | None = None) -> list[GraphPass]:
    """The pass pipeline for `plan`, in order, each pass with its configuration."""
    return [
        logit_lens.configured(plan=plan),
        resolve.configured(plan=plan),
        intervene.configured(plan=plan, edits=edits),
        explicit_attention,
        effect_taps.configured(plan=plan, sinks=sinks),
        instrument.configured(sinks=sinks),
        strip,
        prune.configured(keep_output=keep_output),
    ]


def compile_plan(plan: Plan, model: torch.nn.Module, sinks: Mapping[str, Callable] | None = None,
                 edits: Mapping[str, Callable] | None = None, *,
                 keep_output: bool = False) -> Compiled:
    """Trace `model`, edit and instrument it per `plan`.

    `sinks` maps every `plan.keys` entry to its sink, `edits` every intervention entry's key
    to its edit function (`x -> edited x`); `None` for either uses no-ops (for printing).
    `model` may be built with only the layers the plan reads (`plan.layers_needed`; all of
    them with `keep_output`). The passes rewrite the traced graph in place and its code is
    generated once, at the end.
    """
    needed = plan.layout.n_layers if keep_output else plan.layers_needed
    built = getattr(model, "n_layers_built", needed)
    if built < needed:
        raise ValueError(f"the model is built with {built} of its {plan.layout.n_layers} "
                         f"layers, the plan needs {needed}")
    gm = trace(model)
    gm = run_passes(gm, passes_for(plan, sinks, keep_output=keep_output, edits=edits),
                    recompile_each=False)
    return Compiled(graph_module=gm, plan=plan, returns_output=keep_output)


def compile_experiment(experiment: ir.Experiment, model: torch.nn.Module,
                       sinks: Mapping[str, Callable] | None = None,
                       edits: Mapping[str, Callable] | None = None, *,
                       keep_output: bool = False) -> Compiled:
    """Plan `experiment` for `model` (a `HydraTransformer` built with its Hydra split)."""
    plan = build_plan(experiment, n_layers=model.config.n_layers)
    if model.hydra != plan.layout:
        raise ValueError(f"the model is split as {model.hydra}, the experiment as {plan.layout}")
    return compile_plan(plan, model, sinks, edits, keep_output=keep_output)
