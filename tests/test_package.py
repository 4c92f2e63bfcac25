"""The installed layout: every design-card folder imports as a subpackage of `expc`."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "name", ["expc.grammar", "expc.spec", "expc.models", "expc.compiler", "expc.runtime",
             "expc.report", "expc.cli"],
)
def test_subpackage_imports_under_expc(name):
    module = importlib.import_module(name)
    assert module.__name__ == name


def test_grammar_file_ships_with_package():
    from expc.grammar import GRAMMAR_PATH

    assert GRAMMAR_PATH.name == "expc.lark"


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "expc", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "expc" in out.stdout
