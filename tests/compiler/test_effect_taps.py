"""Effect taps: each effect's sink gets the head's value and the reference head's.

The references are the eager model's logits (one per head) and block outputs read with
forward hooks; an intervention on one head must reach that head's effect taps only.
"""

from __future__ import annotations

import attrs
import pytest
import torch

from compiler_support import (
    LAYOUT, EditRecorder, Recorder, effect, inputs, intervention, plan_of,
)
from expc.compiler.manager import CompilerPassError
from expc.compiler.pipeline import compile_plan
from expc.models.hydra_split import HydraSplit
from expc.models.loading import load_model
from expc.spec.diagnostics import DiagnosticError


def _run(model, plan, edits=None, *, keep_output=False):
    recorder = Recorder(plan)
    compiled = compile_plan(plan, model, recorder.sinks, edits, keep_output=keep_output)
    with torch.no_grad():
        compiled.graph_module(*inputs())
    return recorder, compiled


def _eager(model) -> tuple[torch.Tensor, dict]:
    """The model's logits `[n_heads, B, S, V]` and every block output by module path."""
    blocks = {}
    handles = [module.register_forward_hook(
        lambda m, a, out, name=name: blocks.__setitem__(name, out))
        for name, module in model.named_modules() if name.count(".") in (1, 3)
        and name.split(".")[-2] == "layers"]
    try:
        with torch.no_grad():
            return model(*inputs()), blocks
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("metric", ["kl", "top1"])
def test_paired_metrics_get_the_head_and_reference_logits(model, metric):
    plan = plan_of(*(effect(metric, h, 0) for h in (1, 2)))
    recorder, _ = _run(model, plan)
    logits, _ = _eager(model)
    for head in (1, 2):
        value, reference = recorder.one(f"effect/{metric}/head{head}")
        assert torch.equal(value, logits[head]) and torch.equal(reference, logits[0])


@pytest.mark.parametrize("metric", ["loss", "logit_diff"])
def test_single_metrics_get_the_head_logits(model, metric):
    plan = plan_of(*(effect(metric, h) for h in range(3)))
    recorder, _ = _run(model, plan)
    logits, _ = _eager(model)
    for head in range(3):
        (value,) = recorder.one(f"effect/{metric}/head{head}")
        assert torch.equal(value, logits[head])


def test_cosine_reads_the_site_in_both_heads_or_the_trunk_once(model):
    inside = effect("cosine", 2, 0, at=("resid_out", 3))
    trunk = effect("cosine", 1, 0, at=("resid_out", 1))
    plan = plan_of(inside, attrs.evolve(trunk, key="effect/trunk_cosine/head1"))
    recorder, _ = _run(model, plan)
    _, blocks = _eager(model)
    value, reference = recorder.one(inside.key)
    assert torch.equal(value, blocks["heads.2.layers.3"])
    assert torch.equal(reference, blocks["heads.0.layers.3"])
    value, reference = recorder.one("effect/trunk_cosine/head1")
    assert torch.equal(value, blocks["layers.1"]) and torch.equal(reference, blocks["layers.1"])


def test_an_intervened_head_feeds_its_effects_the_edited_values(model):
    edit = intervention("mlp_out", 3, 1)
    kl, cosine = effect("kl", 1, 0), effect("cosine", 1, 0, at=("mlp_out", 3))
    plan = plan_of(edit, kl, cosine)
    edits = EditRecorder(plan)
    recorder, _ = _run(model, plan, edits.edits)
    logits, _ = _eager(model)
    value, reference = recorder.one(kl.key)
    assert torch.equal(reference, logits[0]) and not torch.equal(value, logits[1])
    (_, edited), = edits.seen[edit.key]
    value, reference = recorder.one(cosine.key)
    assert torch.equal(value, edited) and not torch.equal(reference, edited)


def test_prune_keeps_the_reference_head_alive(model):
    plan = plan_of(effect("kl", 2, 0))
    _, compiled = _run(model, plan)
    code = compiled.graph_module.code
    assert "heads_0_layers_3" in code and "heads_2_layers_3" in code
    assert "heads_1_" not in code


def test_without_a_split_the_effect_reads_the_one_model():
    single = load_model("builtin:tiny-llama")
    plan = plan_of(effect("loss", None), layout=HydraSplit.single(LAYOUT.n_layers))
    recorder, _ = _run(single, plan)
    with torch.no_grad():
        logits = single(*inputs())
    assert torch.equal(recorder.one("effect/loss")[0], logits[0])


def test_effects_with_the_output_kept_change_nothing(model):
    plan = plan_of(effect("kl", 1, 0), effect("loss", 2),
                   effect("cosine", 1, 0, at=("attn_out", 2)))
    recorder = Recorder(plan)
    got = compile_plan(plan, model, recorder.sinks, keep_output=True).graph_module(*inputs())
    assert torch.equal(got, _eager(model)[0])


def test_a_site_the_model_lacks_is_a_diagnostic(model):
    plan = plan_of(effect("cosine", 1, 0, at=("nowhere", 3)))
    with pytest.raises(DiagnosticError) as info:
        compile_plan(plan, model)
    assert {d.code for d in info.value.diagnostics} == {"compile-unresolved"}
    assert "capture site `nowhere` in layer 3 of head 1" in str(info.value)


def test_a_missing_sink_names_the_pass_and_key(model):
    with pytest.raises(CompilerPassError) as info:
        compile_plan(plan_of(effect("loss", 1)), model, {})
    assert info.value.pass_name == "effect_taps" and "effect/loss/head1" in str(info.value)
