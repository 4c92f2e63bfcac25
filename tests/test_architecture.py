"""Dependencies flow one way: spec -> models -> compiler -> runtime -> cli; report reads only
the run folder. Checked on the source with `ast`, so a stray import fails CI, not a user."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# For each layer, the expc subpackages it must never import.
FORBIDDEN = {
    "grammar": {"spec", "models", "compiler", "runtime", "report", "cli"},
    "spec": {"models", "compiler", "runtime", "report", "cli"},
    "models": {"compiler", "runtime", "report", "cli"},
    "compiler": {"runtime", "report", "cli"},
    "runtime": {"cli"},
    "report": {"models", "compiler", "runtime", "cli"},
}


def imported_subpackages(path: Path) -> set[str]:
    """The `expc.<sub>` packages a module imports (top-level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "expc" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_lies_beneath(layer):
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_subpackages(path) & FORBIDDEN[layer])
        for path in sorted((REPO / layer).glob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{layer}/ imports what sits above it: {offenders}"


def test_no_bare_top_level_imports_of_design_folders():
    bare = {"spec", "models", "compiler", "runtime", "report", "cli", "grammar"}
    offenders = []
    for folder in [*FORBIDDEN, "cli", "expc"]:
        for path in (REPO / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    if node.module.split(".")[0] in bare:
                        offenders.append(f"{path.relative_to(REPO)}: from {node.module}")
                elif isinstance(node, ast.Import):
                    offenders += [f"{path.relative_to(REPO)}: import {a.name}"
                                  for a in node.names if a.name.split(".")[0] in bare]
    assert not offenders, offenders
