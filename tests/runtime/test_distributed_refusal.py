"""Sharded runs refuse `iterative_channel`, whose rounds need every earlier batch."""

import pytest

import expc
from expc.compiler.plan import build_plan
from expc.runtime.execute import refuse_sequential_metrics
from expc.spec.diagnostics import DiagnosticError

SPEC = """
experiment sharded {
    model = "builtin:tiny-llama"
    data { source = jsonl("examples/data/prompts.jsonl", field = "text") }
    importance l2_norm at mlp.down_proj[*]
    %s
}
"""


def plan_of(tmp_path, extra: str):
    path = tmp_path / "s.exp"
    path.write_text(SPEC % extra)
    return build_plan(expc.load(path, check_model=False), n_layers=4), path


def test_iterative_channel_is_refused_with_its_spec_line(tmp_path):
    plan, path = plan_of(tmp_path, "importance iterative_channel at mlp.down_proj[1]")
    with pytest.raises(DiagnosticError) as caught:
        refuse_sequential_metrics(plan)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "distributed-iterative"
    assert diagnostic.span.path == str(path) and diagnostic.span.line == 6


def test_other_metrics_shard_fine(tmp_path):
    plan, _ = plan_of(tmp_path, "")
    refuse_sequential_metrics(plan)  # no error
