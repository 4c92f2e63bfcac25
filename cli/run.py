"""`expc run FILE`: compile a spec and execute it into a run folder; exit 0 complete, 1 failed.

`--nproc N` relaunches the same command under torchrun (`python -m torch.distributed.run`)
with N processes; each rank runs its shard and rank 0 writes the one run folder.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import click

from expc.cli._errors import DiagnosticsFailed
from expc.spec.diagnostics import DiagnosticError
from expc.spec.run_format import RESULTS


def _launch(nproc: int, argv: list[str]) -> int:
    """Run `expc run ...` (without --nproc) under torchrun with `nproc` processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "expc", "run", *argv]
    return subprocess.call(cmd)


@click.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Run folder (default: the spec's output.dir).")
@click.option("--resume", is_flag=True, help="Continue from the folder's last checkpoint.")
@click.option("--force", is_flag=True, help="Replace a run folder that holds another spec.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set data.limit=8.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes to launch with torchrun (data sharded across them).")
def command(file: str, out_dir: str | None, resume: bool, force: bool,
            overrides: tuple[str, ...], quiet: bool, nproc: int) -> None:
    """Compile FILE and run it over its data."""
    if nproc > 1:
        argv = [file, *(["--out", out_dir] if out_dir else []), *(["--resume"] if resume else []),
                *(["--force"] if force else []), *(a for o in overrides for a in ("--set", o)),
                *(["--quiet"] if quiet else [])]
        raise SystemExit(_launch(nproc, argv))
    if not quiet:
        logging.getLogger("expc").setLevel(logging.INFO)
    # Before torch loads: idle OpenMP workers sleep instead of spinning. On a shared 2-core
    # machine spinning made runs 3.5x (hidden 512) to 25x (quickstart) slower (issue 5 note).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from expc.runtime.allocator import keep_freed_memory
    from expc.runtime.execute import Interrupted, RunRequest, run

    keep_freed_memory()

    request = RunRequest(spec_path=Path(file), overrides=overrides,
                         out_dir=None if out_dir is None else Path(out_dir), resume=resume,
                         force=force, quiet=quiet)
    try:
        results = run(request)
    except DiagnosticError as exc:
        raise DiagnosticsFailed(exc.diagnostics) from None
    except Interrupted as exc:
        click.echo(f"{exc}\nresume with: expc run {file} --resume"
                   + (f" --out {out_dir}" if out_dir else ""), err=True)
        raise SystemExit(1) from None
    run_dir = results.metadata.get("run_dir")
    if run_dir and not quiet:
        click.echo(f"complete: {len(results)} tensors in {Path(run_dir) / RESULTS}")
