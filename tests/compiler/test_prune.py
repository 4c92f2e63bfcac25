"""Prune: computation nobody reads is gone (node counts), and what is read is unchanged."""

from __future__ import annotations

import pytest
import torch

from compiler_support import Recorder, capture, inputs, plan_of, trace
from expc.compiler.pipeline import compile_plan
from expc.compiler.strip import strip
from expc.compiler.taps import is_tap


def _modules(compiled) -> set[str]:
    return {str(n.target) for n in compiled.graph_module.graph.nodes
            if n.op == "call_module" and not is_tap(n)}


def _run(model, plan, *, keep_output=False):
    recorder = Recorder(plan)
    compiled = compile_plan(plan, model, recorder.sinks, keep_output=keep_output)
    with torch.no_grad():
        out = compiled.graph_module(*inputs())
    return compiled, recorder, out


@pytest.fixture(scope="module")
def stripped_nodes(model) -> int:
    return len(strip(trace(model)).graph.nodes)


def test_everything_after_a_trunk_capture_is_dropped(model, stripped_nodes):
    entry = capture("resid_out", 1)
    compiled, recorder, out = _run(model, plan_of(entry))
    modules = _modules(compiled)
    assert out is None
    assert not any(m.startswith(("heads.", "norm", "lm_head")) for m in modules)
    assert any(m.startswith("layers.1.") for m in modules)
    assert len(compiled.graph_module.graph.nodes) < stripped_nodes / 3
    with pytest.raises(AttributeError):
        compiled.graph_module.get_submodule("heads")
    _, full, _ = _run(model, plan_of(entry), keep_output=True)
    assert torch.equal(recorder.one(entry.key)[0], full.one(entry.key)[0])


def test_heads_nobody_reads_are_dropped(model):
    entry = capture("resid_out", 3, 1)
    compiled, recorder, _ = _run(model, plan_of(entry))
    modules = _modules(compiled)
    assert any(m.startswith("heads.1.layers.3.") for m in modules)
    assert not any(m.startswith(("heads.0.", "heads.2.", "norm", "lm_head")) for m in modules)
    _, full, _ = _run(model, plan_of(entry), keep_output=True)
    assert torch.equal(recorder.one(entry.key)[0], full.one(entry.key)[0])


def test_the_rest_of_a_layer_after_its_last_read_is_dropped(model):
    compiled, _, _ = _run(model, plan_of(capture("attn_in", 2, 0)))
    modules = _modules(compiled)
    assert "heads.0.layers.2.input_layernorm" in modules
    assert not any(m.startswith("heads.0.layers.2.self_attn") for m in modules)
    assert not any(m.startswith("heads.0.layers.2.mlp") for m in modules)


def test_keeping_the_output_keeps_the_whole_model(model, stripped_nodes):
    compiled, _, out = _run(model, plan_of(capture("resid_out", 1)), keep_output=True)
    assert len(compiled.graph_module.graph.nodes) == stripped_nodes + 1  # plus the one tap
    with torch.no_grad():
        assert torch.equal(out, model(*inputs()))


def test_a_logits_capture_keeps_only_its_head(model):
    compiled, recorder, _ = _run(model, plan_of(capture("logits", None, 2)))
    modules = _modules(compiled)
    assert {"norm", "lm_head"} <= modules
    assert not any(m.startswith(("heads.0.", "heads.1.")) for m in modules)
    with torch.no_grad():
        assert torch.equal(recorder.one("capture/head2/logits")[0], model(*inputs())[2])
