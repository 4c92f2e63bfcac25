"""Strip: with every marker removed the graph is exactly the plain model."""

from __future__ import annotations

import torch

from compiler_support import inputs, trace
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
