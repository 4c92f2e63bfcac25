"""Prune: computation nobody reads is gone (node counts, unreachable layers), and what is
read is unchanged — equal to what the uninstrumented model computes."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler_support import (
    HEADS, N_LAYERS, TRUNK, Recorder, capture, inputs, metric, plan_of, trace,
)
from expc.compiler.pipeline import compile_plan
from expc.compiler.plan import CaptureEntry, MetricEntry
from expc.compiler.strip import strip
from expc.compiler.taps import is_tap
from expc.spec.model_shape import ARCHITECTURES


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


def _all_entries():
    places = [(L, None) for L in range(TRUNK)] + [
        (L, h) for L in range(TRUNK, N_LAYERS) for h in range(HEADS)]
    captures = [capture(s, L, h) for L, h in places for s in ARCHITECTURES["llama"].layer_sites]
    captures += [capture("embed")] + [capture(s, None, h) for s in ("final_norm", "logits")
                                      for h in range(HEADS)]
    return captures + [metric("l2_norm", "mlp.down_proj", L, h) for L, h in places]


ALL_ENTRIES = _all_entries()


@pytest.fixture(scope="module")
def reference(model) -> Recorder:
    """Every entry, compiled with the output kept: nothing but markers is removed."""
    _, recorder, _ = _run(model, plan_of(*ALL_ENTRIES), keep_output=True)
    return recorder


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.lists(st.sampled_from(ALL_ENTRIES), min_size=1, max_size=4, unique=True))
def test_any_pruned_plan_reads_what_the_whole_model_computes(model, reference, chosen):
    compiled, recorder, out = _run(model, plan_of(*chosen))
    assert out is None
    for entry in chosen:
        got, want = recorder.one(entry.key), reference.one(entry.key)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)


_LAYER = re.compile(r"(heads\.\d+\.)?layers\.\d+")


def _layers(compiled) -> set[str]:
    """The model's layers (`layers.1`, `heads.2.layers.3`) and `norm`/`lm_head` still run."""
    return {_LAYER.match(m).group(0) if _LAYER.match(m) else m for m in _modules(compiled)}


def _reachable(*entries) -> set[str]:
    """What a plan needs, worked out from the model's layout instead of from the graph."""
    needed = {"embed_tokens"}
    for entry in entries:
        if isinstance(entry, CaptureEntry) and entry.site in ("final_norm", "logits"):
            last = N_LAYERS - 1
            needed |= {"norm"} | ({"lm_head"} if entry.site == "logits" else set())
        else:
            last = entry.layer
        needed |= {f"layers.{L}" for L in range(min(last + 1, TRUNK))}
        if entry.head is not None:
            needed |= {f"heads.{entry.head}.layers.{L}" for L in range(TRUNK, last + 1)}
    return needed


def _eager_module_calls(model, paths) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of each module path in one forward of the uninstrumented model."""
    seen = {}

    def hook_for(path):
        def record(module, args, out) -> None:
            seen[path] = (args[0], out)
        return record

    hooks = [model.get_submodule(p).register_forward_hook(hook_for(p)) for p in paths]
    try:
        with torch.no_grad():
            logits = model(*inputs())
    finally:
        for hook in hooks:
            hook.remove()
    return {"logits": logits, **seen}


PLANS = {
    "trunk metric": [metric("l2_norm", "mlp.down_proj", 0)],
    "head metric and trunk capture": [metric("l2_norm", "self_attn.o_proj", 2, 1),
                                      capture("attn_out", 1)],
    "two heads at different depths": [metric("l2_norm", "mlp.up_proj", 3, 0),
                                      metric("l2_norm", "mlp.down_proj", 2, 2)],
    "one head's logits": [capture("logits", None, 1), metric("l2_norm", "mlp.down_proj", 1)],
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_a_pruned_graph_computes_what_the_model_does_and_drops_what_nobody_reads(model, name):
    entries = PLANS[name]
    compiled, recorder, out = _run(model, plan_of(*entries))
    assert out is None
    assert _layers(compiled) == _reachable(*entries)
    paths = [e.module_path for e in entries if isinstance(e, MetricEntry)]
    eager = _eager_module_calls(model, paths)
    _, unpruned, logits = _run(model, plan_of(*entries), keep_output=True)
    assert torch.equal(logits, eager["logits"])
    for entry in entries:
        if isinstance(entry, MetricEntry):
            want = eager[entry.module_path]
        elif entry.site == "logits":
            want = (eager["logits"][entry.head],)
        else:  # a marker inside the model: read from the unpruned graph, equal to it above
            want = unpruned.one(entry.key)
        for got, expected in zip(recorder.one(entry.key), want, strict=True):
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
