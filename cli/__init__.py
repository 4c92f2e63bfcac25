"""The `expc` command line: a click group whose commands live one per module beside this file.

Each command module defines `command` (an `expc.cli._errors.Command`, which renders a
`DiagnosticError`); `COMMANDS` lists them. A command's module is imported only when that
command runs (or `--help` lists them all), so `expc prune` does not pay for the parser and
checker that `expc check` imports, and command modules import only light modules at import
time (heavy ones such as torch inside the command body), so that `expc check` stays fast. `main` is the console-script entry: user
errors exit 1 with a rendered message, usage errors 2, and an unexpected failure prints one
line "internal error: ... (please report)" and exits 2 — a traceback only with `--debug`.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

COMMANDS = ("check", "compile", "diff", "fmt", "prune", "report", "run")


class _LazyGroup(click.Group):
    """A group whose commands are `expc.cli.<name>.command`, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        return importlib.import_module(f"expc.cli.{cmd_name}").command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.version_option(package_name="expc")
def cli(debug: bool, verbose: int) -> None:
    """expc: declarative activation experiments on transformer models."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


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
