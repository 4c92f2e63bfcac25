"""Taps and edits are graph breaks under `torch.compile` without importing `torch._dynamo`
up front (`compiler/graph_break.py`): `torch.compiler.disable` as a decorator imported it,
1.2 s of every `expc run`, compiled or not."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from expc.compiler.edits import Edit
from expc.compiler.taps import Tap
import expc.runtime.execute
print("torch._dynamo" in sys.modules)
import torch._dynamo
print(getattr(Tap.forward, "_torchdynamo_disable", False),
      getattr(Edit.forward, "_torchdynamo_disable", False))
"""


def test_taps_and_edits_import_no_dynamo_and_break_the_graph_once_it_is_imported():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True", "True"]


def test_a_class_marked_after_dynamo_is_imported_is_disabled_at_once():
    torch = pytest.importorskip("torch")
    import torch._dynamo  # noqa: F401

    from expc.compiler.graph_break import eager_under_compile

    @eager_under_compile
    class Module(torch.nn.Module):
        def forward(self, x):
            return x

    assert Module.forward._torchdynamo_disable
    eager_under_compile(Module)  # marking twice wraps once
    assert Module.forward._torchdynamo_orig_callable.__name__ == "forward"
    assert not hasattr(Module.forward._torchdynamo_orig_callable, "_torchdynamo_disable")
