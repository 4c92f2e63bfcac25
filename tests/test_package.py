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


def test_every_package_folder_is_in_the_package_map():
    """A subpackage missing from pyproject's `packages` imports in the editable checkout but
    is left out of a built wheel: every folder with an `__init__.py` must be listed."""
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    setuptools = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder_of = {package: folder for package, folder in setuptools["package-dir"].items()}
    on_disk = set()
    for package, folder in folder_of.items():
        for init in (repo / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(repo / folder).parts
            on_disk.add(".".join([package, *relative]))
    assert on_disk == set(setuptools["packages"])
