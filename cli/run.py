"""`expc run FILE`: compile a spec and execute it into a run folder; exit 0 complete, 1 failed.

`--nproc N` launches the same command, less `--nproc`, in N processes through torchrun's own
launcher (`torch.distributed.run`); each rank runs its shard and rank 0 writes the one run
folder, and reports a failure as a single process would.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from expc.cli._errors import Command
from expc.cli._options import set_option
from expc.spec import load as load_spec
from expc.spec.run_format import read_run_manifest
from expc.spec.sharding import refuse_sharded_experiment

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure


def argv_without(ctx: click.Context, name: str) -> list[str]:
    """Arguments that parse back to this command's values, less parameter `name`: what each
    torchrun rank runs, so an option added to `expc run` is passed on without more code."""
    argv: list[str] = []
    for param in ctx.command.params:
        if param.name == name:
            continue
        value = ctx.params[param.name]
        for item in value if param.multiple or param.nargs != 1 else (value,):
            if item is None or item is False:
                continue
            if isinstance(param, click.Option):
                argv.append(param.opts[0])
                if param.is_flag:
                    continue
            argv.append(str(item))
    return argv


def _launch(nproc: int, argv: list[str]) -> int:
    """Run `expc run ARGV` in `nproc` local processes (torchrun --standalone); exit status.

    Rank 0 keeps this terminal and reports the run's first failure as one process would
    (`runtime/rank_failures.py`); the other ranks' output goes to log files, and torch's
    launcher logs nothing, so a user error reads as it does without `--nproc`. A failure
    rank 0 could not report (it was killed, or it hit an internal error) gets one line
    naming the rank and where every rank's output is kept.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logs = Path(tempfile.mkdtemp(prefix="expc-ranks-"))
    others = ",".join(f"{rank}:3" for rank in range(1, nproc))  # 3: stdout and stderr
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", f"--log-dir={logs}",
                       f"--redirects={others}", "--module", "expc", "run", *argv])
    try:
        with _launcher_silenced():
            run(args)
    except ChildFailedError as exc:
        status = _report_failure(exc.failures, logs)
    except SignalException:  # Ctrl-C: the launcher stopped the ranks; rank 0 said where
        status = 1
    else:
        status = 0
    if status != 2:
        shutil.rmtree(logs, ignore_errors=True)
    return status


def _report_failure(failures: Mapping[int, ProcessFailure], logs: Path) -> int:
    """Exit status of a failed launch, after saying what rank 0 could not say itself.

    Rank 0 exits 1 having printed the run's first failure, or 2 having printed an internal
    error. Failing before its run began (a bad spec), it may have been stopped before it
    printed: another rank that exited 1 printed the same user error into its log.
    """
    rank0 = failures.get(0)
    if rank0 is not None and rank0.exitcode == 1:
        return 1
    if rank0 is None or rank0.exitcode != 2:
        for _, failure in sorted(failures.items()):
            output = _stderr_log(logs, failure.local_rank)
            if failure.exitcode == 1 and output is not None:
                click.echo(output.read_text(encoding="utf-8", errors="replace").rstrip(),
                           err=True)
                return 1
    rank, failure = min(failures.items(), key=_blame)
    click.echo(f"rank {rank} failed ({_exit_text(failure.exitcode)}); every rank's output "
               f"is in {logs}", err=True)
    return 2


def _blame(item: tuple[int, ProcessFailure]) -> tuple[int, int]:
    """Which failed rank to name: one killed outright (not by the launcher's own SIGTERM),
    else the lowest that exited with an error of its own."""
    rank, failure = item
    killed = failure.exitcode < 0 and failure.exitcode != -signal.SIGTERM
    return (0 if killed else 1 if failure.exitcode > 0 else 2, rank)


def _stderr_log(logs: Path, local_rank: int) -> Path | None:
    """Where torchrun kept a rank's stderr (`<logs>/<run>/attempt_0/<rank>/stderr.log`)."""
    return next(iter(sorted(logs.glob(f"*/attempt_*/{local_rank}/stderr.log"))), None)


def _exit_text(exitcode: int) -> str:
    if exitcode >= 0:
        return f"exit status {exitcode}"
    try:
        return f"killed by {signal.Signals(-exitcode).name}"
    except ValueError:  # a real-time signal has no name
        return f"killed by signal {-exitcode}"


@contextlib.contextmanager
def _launcher_silenced() -> Iterator[None]:
    """No log records while torch's launcher runs in this process: its banners and its
    failure table would bury the one error the user needs (rank 0 prints that)."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@click.command("run", cls=Command)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Run folder (default: the spec's output.dir).")
@click.option("--resume", is_flag=True, help="Continue from the folder's last checkpoint.")
@click.option("--force", is_flag=True, help="Replace a run folder that holds another spec.")
@set_option
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes to launch with torchrun (data sharded across them).")
@click.pass_context
def command(ctx: click.Context, file: str, out_dir: str | None, resume: bool, force: bool,
            overrides: tuple[str, ...], quiet: bool, nproc: int) -> None:
    """Compile FILE and run it over its data."""
    if nproc > 1:
        # Refused here, once, before N processes start and each prints the same error.
        refuse_sharded_experiment(load_spec(file, overrides=overrides))
        raise SystemExit(_launch(nproc, argv_without(ctx, "nproc")))
    if not quiet:
        logging.getLogger("expc").setLevel(logging.INFO)
    from expc.runtime.process import apply_run_settings

    apply_run_settings()  # before torch loads
    from expc.runtime.execute import Interrupted, RunRequest, run

    request = RunRequest(spec_path=Path(file), overrides=overrides,
                         out_dir=None if out_dir is None else Path(out_dir), resume=resume,
                         force=force, quiet=quiet)
    try:
        results = run(request)
    except Interrupted as exc:
        click.echo(f"{exc}\nresume with: expc run {file} --resume"
                   + (f" --out {out_dir}" if out_dir else ""), err=True)
        raise SystemExit(1) from None
    run_dir = results.metadata.get("run_dir")
    if run_dir and not quiet:  # one results file, or a sharded run's index (docs/run-folder.md)
        _, stored = read_run_manifest(run_dir)
        click.echo(f"complete: {len(results)} tensors in {stored}")
