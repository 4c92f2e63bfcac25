"""The notebook API (`expc.load/compile/run/open_run`): real return types, and `import expc`
stays cheap (no torch)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import typing

import expc


def _type_checking_names() -> dict:
    """The names `expc/__init__.py` imports under `if TYPE_CHECKING:`, imported for real."""
    tree = ast.parse(inspect.getsource(expc))
    [block] = [node for node in tree.body if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    names: dict = {}
    exec(compile(ast.Module(body=block.body, type_ignores=[]), "<types>", "exec"), names)
    return names


def test_the_api_returns_real_types():
    from expc.compiler.pipeline import Compiled
    from expc.runtime.cache import Results
    from expc.runtime.store import Run
    from expc.spec.ir import Experiment

    names = _type_checking_names()
    returns = {f.__name__: typing.get_type_hints(f, localns=names)["return"]
               for f in (expc.load, expc.compile, expc.run, expc.open_run)}
    assert returns == {"load": Experiment, "compile": Compiled, "run": Results, "open_run": Run}


def test_import_expc_does_not_import_torch():
    code = "import sys, expc; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
