"""The command group: every command module is listed, shares the one `--set` option, and a
`DiagnosticError` becomes exit 1 in one place (`expc.cli._errors.Command`)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import expc.cli
from expc.cli import cli
from expc.cli._errors import Command
from expc.cli._options import set_option
from expc.spec.diagnostics import DiagnosticError, fail


def _commands() -> dict[str, click.Command]:
    return {name: cli.get_command(None, name) for name in cli.list_commands(None)}


def test_every_command_module_is_added_to_the_group():
    modules = {info.name for info in pkgutil.iter_modules(expc.cli.__path__)
               if not info.name.startswith("_")}
    assert set(_commands()) == modules
    assert all(isinstance(command, Command) for command in _commands().values())
    assert cli.get_command(None, "nonesuch") is None


def test_a_command_imports_only_its_own_module():
    # `expc prune` must not pay for the .exp parser and checker that `expc check` loads.
    code = ("import sys; from expc.cli import cli; cli.get_command(None, 'prune'); "
            "print(sorted(m for m in sys.modules if m.startswith(('expc.cli.', 'lark'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert "expc.cli.prune" in loaded
    assert "expc.cli.check" not in loaded and "'lark'" not in loaded


def test_commands_taking_overrides_share_the_one_set_option():
    reference = set_option(click.Command("x")).params[0]
    takers = {name: p for name, command in _commands().items() for p in command.params
              if p.name == "overrides"}
    assert set(takers) == {"check", "compile", "run"}
    for param in takers.values():
        assert (param.opts, param.multiple, param.metavar, param.help) == (
            reference.opts, reference.multiple, reference.metavar, reference.help)


def _failing(format_param: str | None) -> click.Command:
    @click.command(cls=Command, format_param=format_param)
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    def command(fmt: str) -> None:
        raise fail("spec.exp", "something is wrong", code="demo", line=2, col=3)

    return command


def test_a_diagnostic_error_exits_1_in_the_commands_format():
    result = CliRunner().invoke(_failing("fmt"), ["--format", "json"])
    assert result.exit_code == 1
    [entry] = json.loads(result.stdout)
    assert (entry["path"], entry["line"], entry["col"], entry["code"]) == ("spec.exp", 2, 3, "demo")


@pytest.mark.parametrize("format_param", [None, "fmt"])
def test_text_diagnostics_go_to_stderr(format_param):
    args = ["--format", "json"] if format_param is None else []
    result = CliRunner().invoke(_failing(format_param), args)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("spec.exp:2:3: error: something is wrong")
    assert not isinstance(result.exception, DiagnosticError)
