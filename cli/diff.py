"""`expc diff RUN_A RUN_B [--atol --rtol --format text|json]`: compare two run folders key
by key (ranking keys also as rankings) and name the first layer where they diverge. Exit 0
same, 1 different (a run that is not `complete` is never the same; or an unreadable run)."""

from __future__ import annotations

from pathlib import Path

import click

from expc.cli._errors import Command
from expc.report.diff_defaults import DEFAULT_ATOL, DEFAULT_RTOL


@click.command(name="diff", cls=Command, format_param="fmt")
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--atol", type=click.FloatRange(min=0.0), default=DEFAULT_ATOL, show_default=True,
              help="Absolute tolerance (float keys; integer keys compare exactly).")
@click.option("--rtol", type=click.FloatRange(min=0.0), default=DEFAULT_RTOL, show_default=True,
              help="Relative tolerance (of RUN_B's values).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.pass_context
def command(ctx: click.Context, run_a: Path, run_b: Path, atol: float, rtol: float,
            fmt: str) -> None:
    """Compare two run folders key by key; exit 0 if both are complete and the same within
    tolerance, else 1. Importance scores are also compared as rankings (top-k overlap,
    Spearman)."""
    from expc.report.diff import diff_runs, render_json
    from expc.report.diff_text import render_text

    result = diff_runs(str(run_a), str(run_b), atol=atol, rtol=rtol)
    click.echo(render_json(result) if fmt == "json" else render_text(result))
    ctx.exit(0 if result.same else 1)
