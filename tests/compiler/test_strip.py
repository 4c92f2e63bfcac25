"""Strip: with every marker removed the graph is exactly the plain model."""

from __future__ import annotations

import torch

from compiler_support import capture, inputs, plan_of, trace
from expc.compiler.pipeline import compile_plan
from expc.compiler.nodes import is_marker
from expc.compiler.strip import strip


def test_stripped_graph_has_no_markers_and_equals_the_model(model):
    traced = trace(model)
    markers = sum(is_marker(n) for n in traced.graph.nodes)
    stripped = strip(traced)
    assert markers > 0
    assert not any(is_marker(n) for n in stripped.graph.nodes)
    assert len(stripped.graph.nodes) == len(traced.graph.nodes) - markers
    assert "markers_mark(" not in stripped.code
    ids, mask = inputs()
    with torch.no_grad():
        assert torch.equal(stripped(ids, mask), model(ids, mask))


def test_strip_leaves_its_input_graph_alone(model):
    traced = trace(model)
    before = traced.code
    strip(traced)
    assert traced.code == before
    assert any(is_marker(n) for n in traced.graph.nodes)


def test_markers_cost_nothing_no_value_is_computed_only_to_be_marked(model):
    """Every site (the §6 ones among them) marks a value the model goes on with: once the
    markers are stripped, dead-code elimination finds nothing, so no marker left behind a
    view, transpose or copy of its own; and a lens is built only where captured."""
    stripped = strip(trace(model))
    before = len(stripped.graph.nodes)
    stripped.graph.eliminate_dead_code()
    assert len(stripped.graph.nodes) == before
    compiled = compile_plan(plan_of(capture("resid_out", 3, 1)), model, keep_output=True)
    calls = [n.target for n in compiled.graph_module.graph.nodes if n.op == "call_module"]
    assert calls.count("lm_head") == calls.count("norm") == 3  # one per head, no lens
