"""A spec is data: it cannot run code, and checking one never imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.spec.conftest import spec_with

SPEC_DIR = Path(__file__).parents[2] / "spec"
CANARY = "canary_file_made_by_a_spec"


@pytest.mark.parametrize("attempt", [
    f'model = __import__("os").system("touch {CANARY}")',
    f'model = eval("open(\'{CANARY}\', \'w\')")',
    f'model = exec("open(\'{CANARY}\', \'w\')")',
    f'data {{ source = jsonl(open("{CANARY}", "w")) }}',
    f'capture resid_out[*] {{ aggregate = mean(mask = field(__import__("os").system("touch {CANARY}"))) }}',
    'seed = {"__class__": 1}',
    f'seed = lambda: open("{CANARY}", "w")',
    'import os',
    f'model = f"{{open(\'{CANARY}\', \'w\')}}"',
])
def test_code_in_a_spec_is_never_run(workdir, diagnose, attempt):
    diags = diagnose(spec_with(attempt))
    assert diags, "an attempt to run code must at least be a diagnostic"
    assert not (workdir / CANARY).exists()


def test_the_front_end_has_no_eval_exec_or_import_by_name():
    banned_builtins = {"eval", "exec", "compile", "__import__"}
    banned_attributes = {"literal_eval", "import_module", "load_module"}
    for path in SPEC_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                bad = (isinstance(func, ast.Name) and func.id in banned_builtins) or (
                    isinstance(func, ast.Attribute) and func.attr in banned_attributes)
                assert not bad, f"{path.name}:{node.lineno} calls {ast.unparse(func)}"


def test_checking_a_spec_never_imports_torch():
    code = (
        "import sys\n"
        "import expc, expc.spec, expc.spec.run_format\n"
        "from expc.spec import load, check_file\n"
        "assert check_file('examples/quickstart.exp') == ()\n"
        "load('examples/quickstart.exp', check_model=False)\n"
        "from expc.spec.formatter import format_text\n"
        "format_text(open('examples/quickstart.exp').read())\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=SPEC_DIR.parent, check=True)
    assert out.stdout.strip() == "False"


def test_expc_check_command_never_imports_torch():
    code = (
        "import sys\n"
        "from expc.cli import main\n"
        "try:\n"
        "    main(['check', 'examples/quickstart.exp'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=SPEC_DIR.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", out.stderr
