"""Attention: explicit softmax (and a pattern tap) only where a pattern is captured."""

from __future__ import annotations

import pytest
import torch

from compiler_support import HEADS, N_LAYERS, TRUNK, Recorder, capture, inputs, plan_of
from expc.compiler.nodes import is_attention
from expc.compiler.pipeline import compile_plan
from expc.models import markers

PATTERNS = (capture("attn_pattern", 1), capture("attn_pattern", 3, 1))
ATTENTION_LAYERS = TRUNK + HEADS * (N_LAYERS - TRUNK)


def _softmax_written_out(q, k, allowed, scale):  # [B, nH, S, d], [B, nH, S, d], [B, 1, S, S]
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    scores = torch.where(allowed, scores, torch.tensor(float("-inf")))
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    return weights / weights.sum(-1, keepdim=True)  # [B, nH, S_q, S_k]


@pytest.fixture(scope="module")
def compiled(model):
    plan = plan_of(*PATTERNS)
    recorder = Recorder(plan)
    return compile_plan(plan, model, recorder.sinks, keep_output=True), recorder


def test_patterns_equal_a_softmax_written_out(model, compiled, monkeypatch):
    compiled_model, recorder = compiled
    seen = {}
    fused = markers.attention

    def recording_attention(q, k, v, attn_mask, scale, layer, head, softcap=None):
        seen[(layer, head)] = (q, k, attn_mask, scale)
        return fused(q, k, v, attn_mask, scale, layer, head)

    ids, mask = inputs()
    monkeypatch.setattr(markers, "attention", recording_attention)
    with torch.no_grad():
        model(ids, mask)
    monkeypatch.undo()
    with torch.no_grad():
        compiled_model.graph_module(ids, mask)
    for entry in PATTERNS:
        (pattern,) = recorder.one(entry.key)  # [B, S_q, nH, S_k]
        expected = _softmax_written_out(*seen[(entry.layer, entry.head)])
        assert pattern.shape == (3, 7, 4, 7)
        torch.testing.assert_close(pattern.permute(0, 2, 1, 3), expected, atol=1e-6, rtol=1e-5)


def test_other_layers_keep_fused_attention(compiled):
    graph = compiled[0].graph_module.graph
    fused = [n for n in graph.nodes if is_attention(n)]
    explicit = [n for n in graph.nodes if n.target is markers.attention_weights]
    assert len(fused) == ATTENTION_LAYERS - len(PATTERNS)
    assert len(explicit) == len(PATTERNS)
    assert {(n.args[5], n.args[6]) for n in fused}.isdisjoint({(1, None), (3, 1)})


def test_explicit_attention_keeps_the_outputs(model, compiled):
    ids, mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(compiled[0].graph_module(ids, mask), model(ids, mask),
                                   atol=1e-5, rtol=1e-5)


def test_values_are_the_value_projection(model):
    plan = plan_of(capture("values", 2, 0))
    recorder = Recorder(plan)
    compiled = compile_plan(plan, model, recorder.sinks)
    projected = []
    hook = model.get_submodule("heads.0.layers.2.self_attn.v_proj").register_forward_hook(
        lambda m, a, out: projected.append(out))
    ids, mask = inputs()
    with torch.no_grad():
        model(ids, mask)
    hook.remove()
    compiled.graph_module(ids, mask)
    assert torch.equal(recorder.one("capture/head0/values_2")[0], projected[0])
