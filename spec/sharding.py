"""What cannot run sharded across processes (`expc run --nproc N`, torchrun).

`iterative_channel` prunes in rounds that depend on every batch before them, so data split
across processes cannot reproduce a single run. `expc run --nproc` refuses it in the parent,
before any process starts, and the runtime refuses it in each rank (a torchrun started by
hand): both with `sequential_metric_error`.
"""

from __future__ import annotations

from collections.abc import Iterable

from expc.spec import ir
from expc.spec.diagnostics import Diagnostic, DiagnosticError, Span, error

SEQUENTIAL_METRICS = ("iterative_channel",)


def sequential_metric_error(span: Span | None) -> Diagnostic:
    return error(span, "iterative_channel cannot run sharded across processes: its pruning "
                 "rounds depend on every batch before them", code="distributed-iterative",
                 help=["run it with one process (drop --nproc / torchrun)"])


def refuse_sharded(spans: Iterable[tuple[str, Span | None]]) -> None:
    """Raise for every `(metric, span)` whose metric cannot be sharded."""
    problems = [sequential_metric_error(span) for metric, span in spans
                if metric in SEQUENTIAL_METRICS]
    if problems:
        raise DiagnosticError(problems)


def refuse_sharded_experiment(experiment: ir.Experiment) -> None:
    refuse_sharded((imp.metric, imp.span) for imp in experiment.importances)
