"""`expc check FILE...`: parse and check specs, report every problem, exit 0 / 1 / 2.

A CI tool: it imports no torch and reads at most each model's `config.json` and the data.
Errors exit 1. Warnings exit 0: a run whose results would not fit in this machine's memory
or on the output folder's disk (`expc.runtime.result_room`), only for files without errors
and not with `--no-model`; where the model's config or the data is absent, that is skipped.
"""

from __future__ import annotations

import click

from expc.cli._errors import Command, DiagnosticsFailed
from expc.cli._options import set_option
from expc.spec.diagnostics import RENDERERS, Diagnostic
from expc.spec.loader import check_experiments


def _file_diagnostics(path: str, *, overrides: tuple[str, ...],
                      no_model: bool) -> tuple[Diagnostic, ...]:
    """One file's problems; its room warnings when it has no error."""
    experiments, diagnostics = check_experiments(path, overrides=overrides,
                                                 check_model=not no_model)
    if no_model or any(d.severity == "error" for d in diagnostics):
        return diagnostics
    from expc.runtime.result_room import room_warnings  # reads the data: only when needed

    return (*diagnostics, *(w for e in experiments for w in room_warnings(e)))


@click.command("check", cls=Command, format_param="fmt")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--no-model", is_flag=True,
              help="Skip checks that need local files (model config.json, data file).")
@click.option("--format", "fmt", type=click.Choice(tuple(RENDERERS)), default="text",
              show_default=True, help="How to print diagnostics.")
@set_option
def command(files: tuple[str, ...], no_model: bool, fmt: str, overrides: tuple[str, ...]) -> None:
    """Check .exp files: syntax, semantics and (unless --no-model) the model's shape."""
    diagnostics = tuple(d for path in files
                        for d in _file_diagnostics(path, overrides=overrides, no_model=no_model))
    if any(d.severity == "error" for d in diagnostics):
        raise DiagnosticsFailed(diagnostics, fmt)
    if diagnostics or fmt == "json":
        click.echo(RENDERERS[fmt](diagnostics), err=fmt == "text")
    if fmt == "text":
        warned = f", {len(diagnostics)} warning{'s' if len(diagnostics) != 1 else ''}" \
            if diagnostics else ""
        click.echo(f"ok: {len(files)} file{'s' if len(files) != 1 else ''} checked{warned}",
                   err=True)
