"""Dependencies flow one way: spec -> models -> compiler -> runtime -> cli; report reads only
the run folder; no module imports the package root, and no two modules import each other,
however indirectly (a function-level import included: hiding a cycle inside a function
does not remove it). Checked on the source with `ast`, so a stray import fails CI, not a user."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
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


# Repository folder -> installed package (pyproject's package-dir).
PACKAGES = {"expc": "expc", **{f: f"expc.{f}" for f in
                               ("grammar", "spec", "models", "compiler", "runtime", "report", "cli")}}


def sources(folder: str) -> list[Path]:
    """Every Python file of a design folder, subpackages included."""
    return sorted((REPO / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    """`runtime/aggregate/full.py` -> `expc.runtime.aggregate.full`; `__init__` names its package."""
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> nx.DiGraph:
    """An edge from each expc module to every expc module it imports, anywhere in its body.

    `from pkg import name` points at the submodule `pkg.name` when there is one, else at
    `pkg` itself (a name the package defines or re-exports)."""
    modules = {module_name(path): path for folder in PACKAGES for path in sources(folder)}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                           else node.module for alias in node.names]
            else:
                continue
            graph.add_edges_from((name, t) for t in targets if t in modules and t != name)
    return graph


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "modules that import each other: " + "; ".join(
        " -> ".join([*cycle, cycle[0]]) for cycle in cycles)


def test_no_module_imports_the_package_root():
    """The root is the notebook API on top of everything; a module below it importing it is
    a back-arrow (the version, say, has its home in the package metadata)."""
    graph = import_graph()
    offenders = sorted(graph.predecessors("expc"))
    assert not offenders, f"modules importing the package root `expc`: {offenders}"


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
        for path in sources(layer)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{layer}/ imports what sits above it: {offenders}"


def test_no_bare_top_level_imports_of_design_folders():
    bare = {"spec", "models", "compiler", "runtime", "report", "cli", "grammar"}
    offenders = []
    for folder in [*FORBIDDEN, "cli", "expc"]:
        for path in sources(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    if node.module.split(".")[0] in bare:
                        offenders.append(f"{path.relative_to(REPO)}: from {node.module}")
                elif isinstance(node, ast.Import):
                    offenders += [f"{path.relative_to(REPO)}: import {a.name}"
                                  for a in node.names if a.name.split(".")[0] in bare]
    assert not offenders, offenders
