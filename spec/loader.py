"""The public entry points: `load` one experiment, `check_file` every experiment of a file.

Both run the whole front end — parse, includes, `extends`, `--set`, the checks, and (with
`check_model`) the model-shape and file checks — and report every problem at once.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence

import attrs

from expc.spec import ir
from expc.spec import syntax as sx
from expc.spec.checks import lower
from expc.spec.diagnostics import Diagnostic, DiagnosticError, Span, fail, normalize
from expc.spec.model_checks import check_against_model, check_files, duplicate_keys
from expc.spec.model_shape import ModelShape, read_model_shape
from expc.spec.resolve import OVERRIDE_PATH, Workspace, apply_overrides, flatten, load_workspace
from expc.spec.suggest import did_you_mean


def load(path: str, *, overrides: Sequence[str] = (), check_model: bool = True,
         experiment: str | None = None) -> ir.Experiment:
    """The checked IR of the last experiment declared in `path` (or the one named).

    Raises `DiagnosticError` with every problem found.
    """
    with _collector_paused():
        return _load(path, overrides, check_model, experiment)


def _load(path: str, overrides: Sequence[str], check_model: bool,
          experiment: str | None) -> ir.Experiment:
    ws = load_workspace(str(path))
    own = [e.name for e in ws.root.experiments]
    if experiment is None:
        if not own:
            raise fail(_file_span(path), "the file declares no experiment", code="missing",
                       help=("add `experiment NAME { ... }`",))
        experiment = own[-1]
    elif experiment not in ws.experiments:
        raise fail(_file_span(path), f"no experiment `{experiment}` in {path}", code="unknown",
                   help=did_you_mean(experiment, ws.experiments))
    result, diags = _check_one(ws, experiment, overrides, check_model, shapes={})
    diags = [*ws.diagnostics, *diags]
    if diags or result is None:
        raise DiagnosticError(diags)
    return result


def check_file(path: str, *, overrides: Sequence[str] = (), check_model: bool = True
               ) -> tuple[Diagnostic, ...]:
    """Every problem in every experiment `path` declares (sorted, de-duplicated)."""
    return check_experiments(path, overrides=overrides, check_model=check_model)[1]


def check_experiments(path: str, *, overrides: Sequence[str] = (), check_model: bool = True
                      ) -> tuple[tuple[ir.Experiment, ...], tuple[Diagnostic, ...]]:
    """`check_file`'s problems, with the experiments that could be lowered to IR."""
    with _collector_paused():
        return _check_file(path, overrides, check_model)


def _check_file(path: str, overrides: Sequence[str], check_model: bool
                ) -> tuple[tuple[ir.Experiment, ...], tuple[Diagnostic, ...]]:
    try:
        ws = load_workspace(str(path))
    except DiagnosticError as exc:
        return (), exc.diagnostics
    diags = list(ws.diagnostics)
    experiments = []
    shapes: dict[str, ModelShape | None] = {}
    for decl in ws.root.experiments:
        if ws.experiments.get(decl.name) is decl:
            experiment, found = _check_one(ws, decl.name, overrides, check_model, shapes)
            diags.extend(found)
            experiments += [] if experiment is None else [experiment]
    return tuple(experiments), normalize(diags)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a spec is read: parsing allocates hundreds of
    thousands of long-lived nodes, and the collector rescanning them all every few thousand
    allocations made a 30 000-statement spec take minutes instead of seconds. The front end
    creates no cycles worth collecting; whatever it leaves is collected once it is back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_one(ws: Workspace, name: str, overrides: Sequence[str], check_model: bool,
               shapes: dict[str, ModelShape | None]) -> tuple[ir.Experiment | None, list[Diagnostic]]:
    decl, diags = flatten(ws, name)
    if decl is None:
        return None, diags
    decl, override_diags = apply_overrides(decl, overrides)
    diags.extend(override_diags)
    experiment, lower_diags = lower(decl, ws.root.path)
    diags.extend(_name_override(d, overrides) for d in lower_diags)
    # the model is looked up even when other checks failed: a wrong path is worth knowing
    shape = _shape(decl, shapes, diags) if check_model else None
    if experiment is None:
        return None, diags
    if check_model:
        diags.extend(check_files(experiment))
    if shape is None:
        diags.extend(duplicate_keys(experiment))
    else:
        diags.extend(check_against_model(experiment, shape))
    return experiment, diags


def _name_override(d: Diagnostic, overrides: Sequence[str]) -> Diagnostic:
    """A problem in a `--set` value, with the option it came from (there is no file to show)."""
    if d.span.path != OVERRIDE_PATH or not 1 <= d.span.line <= len(overrides):
        return d
    return attrs.evolve(d, help=(*d.help, f"in `--set {overrides[d.span.line - 1]}`"))


def _shape(decl: sx.ExperimentDecl, shapes: dict[str, ModelShape | None],
           diags: list[Diagnostic]) -> ModelShape | None:
    """The shape of the model `decl` names (a string; other values the checks report)."""
    value = next((s.value for s in reversed(decl.statements)
                  if isinstance(s, sx.Assign) and s.key == "model"), None)
    if not isinstance(value, sx.Str):
        return None
    if value.value not in shapes:
        try:
            shapes[value.value] = read_model_shape(value.value, span=value.span)
        except DiagnosticError as exc:
            shapes[value.value] = None
            diags.extend(exc.diagnostics)
            return None
    elif shapes[value.value] is None:  # reported already, but at this experiment's line too
        try:
            read_model_shape(value.value, span=value.span)
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
    return shapes[value.value]


def _file_span(path: str) -> Span:
    return Span(path=str(path))
