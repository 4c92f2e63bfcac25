"""`compile = true` runs the examples to the same numbers as eager (issue 16: any spec with a
per-sample capture crashed with an internal error, torch.compile tracing the runtime's
aggregation with fake tensors). Taps and edits are graph breaks (`compiler/taps.py`,
`compiler/edits.py`); the quickstart covers captures and metrics, the ablation edits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import expc

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("example, limit, first", [
    ("quickstart", 16, None),  # 4 batches: the quickstart's iterative_channel has 4 rounds
    ("ablation", 8, "ablation_means"),
])
def test_compiled_example_equals_eager(example, limit, first, tmp_path, monkeypatch):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)  # the examples read and write runs/ relative to here
    if first is not None:
        expc.run(f"examples/{first}.exp")
    spec = f"examples/{example}.exp"
    eager = expc.run(spec, out="eager", overrides=[f"data.limit={limit}"])
    compiled = expc.run(spec, out="compiled",
                        overrides=[f"data.limit={limit}", "compile=true"])
    assert set(compiled) == set(eager)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
