"""`compile_experiment`: a spec in, an instrumented graph feeding one sink per result key out."""

from __future__ import annotations

import pytest
import torch

from compiler_support import Recorder, capture, inputs, plan_of
from expc import spec
from expc.compiler.pipeline import compile_experiment, passes_for
from expc.compiler.plan import build_plan
from expc.compiler.taps import Tap, is_tap
from expc.models.loading import load_model
from expc.spec import ir


def test_the_quickstart_compiles_to_one_tap_per_key(model):
    experiment = spec.load("examples/quickstart.exp")
    recorder = Recorder(build_plan(experiment, n_layers=4))
    compiled = compile_experiment(experiment, model, recorder.sinks)
    gm = compiled.graph_module
    taps = [gm.get_submodule(n.target) for n in gm.graph.nodes if is_tap(n)]
    assert all(isinstance(t, Tap) for t in taps)
    assert sorted(t.key for t in taps) == sorted(compiled.plan.keys)
    ids, mask = inputs()
    assert gm(ids, mask) is None and not compiled.returns_output
    assert set(recorder.calls) == set(compiled.plan.keys)
    assert recorder.one("capture/head1/resid_out_3")[0].shape == (3, 7, 64)
    x_in, y_out = recorder.one("importance/l2_norm/head2/layers.3.mlp.down_proj")
    assert x_in.shape == (3, 7, 128) and y_out.shape == (3, 7, 64)


def test_a_model_split_unlike_the_spec_is_refused():
    experiment = spec.load("examples/quickstart.exp")  # trunk 2, 3 heads
    with pytest.raises(ValueError, match="split"):
        compile_experiment(experiment, load_model("builtin:tiny-llama", hydra=ir.Hydra(trunk=3, heads=3)))


def test_the_pass_list_shows_each_pass_with_its_configuration():
    plan = plan_of(capture("resid_out", 1))
    passes = passes_for(plan, None, keep_output=True)
    assert [p.name for p in passes] == [
        "logit_lens", "resolve", "intervene", "explicit_attention", "effect_taps", "instrument",
        "strip", "prune"]
    assert [dict(p.params) for p in passes] == [
        {"plan": plan}, {"plan": plan}, {"plan": plan, "edits": None}, {}, {"plan": plan, "sinks": None},
        {"sinks": None}, {}, {"keep_output": True}]
    assert repr(passes[-1]) == "prune(keep_output=True)"
    assert repr(passes[1]) == f"resolve(plan={plan!r})"
