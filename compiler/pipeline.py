"""The compiler's entry points: plan, trace, and run the passes in order.

`compile_experiment` is what the runtime calls; `compile_plan` does the same from a plan
(tests, benchmarks). Pass order matters: resolve labels the nodes, attention expands the
labelled attention nodes into explicit softmax with a pattern marker, instrument taps every
labelled node, strip removes the markers nobody reads, prune drops what nothing needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import torch
import torch.fx as fx

from expc.compiler.attention import explicit_attention
from expc.compiler.instrument import instrument
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


def passes_for(plan: Plan, sinks: Mapping[str, Callable] | None, *,
               keep_output: bool) -> list[GraphPass]:
    """The pass pipeline for `plan`, in order, each pass with its configuration."""
    return [
        resolve.configured(plan=plan),
        explicit_attention,
        instrument.configured(sinks=sinks),
        strip,
        prune.configured(keep_output=keep_output),
    ]


def compile_plan(plan: Plan, model: torch.nn.Module, sinks: Mapping[str, Callable] | None = None,
                 *, keep_output: bool = False) -> Compiled:
    """Trace `model` and instrument it per `plan`; `sinks=None` uses no-op sinks."""
    gm = trace(model)
    gm = run_passes(gm, passes_for(plan, sinks, keep_output=keep_output))
    return Compiled(graph_module=gm, plan=plan, returns_output=keep_output)


def compile_experiment(experiment: ir.Experiment, model: torch.nn.Module,
                       sinks: Mapping[str, Callable] | None = None, *,
                       keep_output: bool = False) -> Compiled:
    """Plan `experiment` for `model` (a `HydraTransformer` built with its Hydra split)."""
    plan = build_plan(experiment, n_layers=model.config.n_layers)
    if model.hydra != plan.layout:
        raise ValueError(f"the model is split as {model.hydra}, the experiment as {plan.layout}")
    return compile_plan(plan, model, sinks, keep_output=keep_output)
