"""The `expc` command line: a click group whose commands live one per module beside this file.

Each command module defines `command` (an `expc.cli._errors.Command`, which renders a
`DiagnosticError`); `_add_commands` lists them.

Command modules import only light modules at import time (heavy ones such as torch inside
the command body), so that `expc check` stays fast. `main` is the console-script entry: user
errors exit 1 with a rendered message, usage errors 2, and an unexpected failure prints one
line "internal error: ... (please report)" and exits 2 — a traceback only with `--debug`.
"""

from __future__ import annotations

import logging
import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.version_option(package_name="expc")
def cli(debug: bool, verbose: int) -> None:
    """expc: declarative activation experiments on transformer models."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _add_commands() -> None:
    """Attach the commands, one per module; each module imports only light modules."""
    from expc.cli import check, compile, diff, fmt, prune, report, run

    for module in (check, compile, diff, fmt, prune, report, run):
        cli.add_command(module.command)


_add_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point with the exit-code contract of contracts §2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        rc = cli.main(args=args, prog_name="expc", standalone_mode=False)
    except click.ClickException as exc:  # UsageError exits 2, user errors 1
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into a clean line
        if "--debug" in args:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (please report)", err=True)
        sys.exit(2)
    sys.exit(rc if isinstance(rc, int) else 0)
