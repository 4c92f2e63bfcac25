"""`apply_run_settings`, the process settings `expc run` and `expc.run()` share."""

import os
import subprocess
import sys

import pytest

SHOW = ("from expc.runtime.process import apply_run_settings; apply_run_settings(); "
        "import os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_idle_openmp_workers_sleep_unless_the_user_chose(preset, expected):
    # In a child process: both settings are process-wide.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == [expected, "False"]  # and torch is still not loaded


def test_expc_run_applies_them_before_torch_loads():
    code = """
import sys
import expc
import expc.runtime.process as process
from expc.spec.diagnostics import DiagnosticError

seen = []
process.apply_run_settings = lambda: seen.append("torch" in sys.modules)
try:
    expc.run("missing.exp")
except DiagnosticError:
    pass
print(seen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[False]"
