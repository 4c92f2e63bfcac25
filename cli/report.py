"""`expc report RUN_DIR [-o FILE]`: a self-contained HTML report of a run folder, with
`summary.md` beside it (contracts §2). Exit 0 when written, 1 for an unreadable run."""

from __future__ import annotations

from pathlib import Path

import click

from expc.cli._errors import Command


@click.command(name="report", cls=Command)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="HTML file to write (default RUN_DIR/report.html).")
def command(run_dir: Path, output: Path | None) -> None:
    """Write an HTML report (with plots) of RUN_DIR and a Markdown summary beside it."""
    from expc.report.build import write_report

    files = write_report(run_dir, output)
    click.echo(f"wrote {files.html} ({', '.join(files.sections)}) and {files.summary}")
