"""`expc fmt FILE... [--check]`: rewrite specs in the canonical layout.

Files are replaced atomically (temporary file, then rename). With `--check` nothing is
written: the files that would change are listed and the exit code is 1.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click

from expc.cli._errors import Command, DiagnosticsFailed
from expc.spec.diagnostics import DiagnosticError

log = logging.getLogger(__name__)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@click.command("fmt", cls=Command)
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if a file would change.")
def command(files: tuple[Path, ...], check: bool) -> None:
    """Format .exp files in place (idempotent; comments are kept)."""
    from expc.spec.formatter import format_text  # only this command needs the formatter
    from expc.spec.parser import decode

    diagnostics = []
    changed = []
    for path in files:
        try:
            original = decode(path.read_bytes(), str(path))
            formatted = format_text(original, str(path))
        except DiagnosticError as exc:
            diagnostics.extend(exc.diagnostics)
            continue
        if formatted == original:
            continue
        changed.append(path)
        if check:
            click.echo(f"would reformat {path}")
        else:
            _write_atomic(path, formatted)
            log.info("reformatted %s", path)
    if diagnostics:
        raise DiagnosticsFailed(diagnostics)
    if check and changed:
        raise SystemExit(1)
    if not check:
        click.echo(f"{len(changed)} file{'s' if len(changed) != 1 else ''} reformatted, "
                   f"{len(files) - len(changed)} unchanged", err=True)
