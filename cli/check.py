"""`expc check FILE...`: parse and check specs, report every problem, exit 0 / 1 / 2.

A CI tool: it imports no torch and reads at most each model's `config.json`.
"""

from __future__ import annotations

import click

from expc.cli._errors import Command, DiagnosticsFailed
from expc.cli._options import set_option
from expc.spec.diagnostics import RENDERERS
from expc.spec.loader import check_file


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
                        for d in check_file(path, overrides=overrides, check_model=not no_model))
    if diagnostics:
        raise DiagnosticsFailed(diagnostics, fmt)
    if fmt == "json":
        click.echo("[]")
    elif fmt == "text":
        click.echo(f"ok: {len(files)} file{'s' if len(files) != 1 else ''} checked", err=True)
