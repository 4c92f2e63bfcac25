"""`expc run FILE`: compile a spec and execute it into a run folder; exit 0 complete, 1 failed.

`--nproc N` launches the same command, less `--nproc`, in N processes through torchrun's own
launcher (`torch.distributed.run`); each rank runs its shard and rank 0 writes the one run
folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from expc.cli._errors import Command
from expc.cli._options import set_option
from expc.spec import load as load_spec
from expc.spec.run_format import RESULTS
from expc.spec.sharding import refuse_sharded_experiment


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
    """Run `expc run ARGV` in `nproc` local processes (torchrun --standalone); exit status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "expc", "run",
                        *argv]))
    except ChildFailedError as exc:  # each rank has printed its own error
        click.echo(str(exc), err=True)
        return 1
    return 0


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
    if run_dir and not quiet:
        click.echo(f"complete: {len(results)} tensors in {Path(run_dir) / RESULTS}")
