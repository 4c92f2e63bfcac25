"""Instrument: taps see exactly the marked values and module inputs/outputs, and change nothing.

The references come from the eager model itself through PyTorch forward hooks on the block
modules (their output is `resid_out`), the shared final norm and the metric modules.
"""

from __future__ import annotations

import attrs
import pytest
import torch

from compiler_support import HEADS, N_LAYERS, TRUNK, Recorder, capture, inputs, metric, plan_of
from expc.compiler.manager import CompilerPassError
from expc.compiler.pipeline import compile_plan
from expc.spec.model_shape import ARCHITECTURES

SITES = tuple(s for s in ARCHITECTURES["llama"].layer_sites if s != "attn_pattern")
METRIC_MODULES = ("mlp.down_proj", "self_attn.o_proj", "post_attention_layernorm")


def _places():
    for layer in range(N_LAYERS):
        for head in ((None,) if layer < TRUNK else range(HEADS)):
            yield layer, head


def _block(model, layer, head):
    return model.get_submodule(f"layers.{layer}" if head is None else f"heads.{head}.layers.{layer}")


@attrs.define
class Run:
    plan: object
    recorder: Recorder
    expected: torch.Tensor  # eager logits
    got: torch.Tensor  # instrumented logits
    blocks: dict  # (layer, head) -> eager block output
    norms: list  # eager final-norm outputs, one per head
    modules: dict  # metric key -> eager (input, output)


@pytest.fixture(scope="module")
def run(model) -> Run:
    """Every site of every layer, every model-wide site and a metric at three module kinds."""
    entries = [capture(site, layer, head) for layer, head in _places() for site in SITES]
    entries += [capture("embed")]
    entries += [capture(s, None, h) for s in ("final_norm", "logits") for h in range(HEADS)]
    entries += [metric("l2_norm", m, layer, head) for layer, head in _places()
                for m in METRIC_MODULES]
    plan = plan_of(*entries)
    recorder = Recorder(plan)
    compiled = compile_plan(plan, model, recorder.sinks, keep_output=True)
    blocks, norms, modules = {}, [], {}
    hooks = [_block(model, L, h).register_forward_hook(
        lambda m, a, out, key=(L, h): blocks.__setitem__(key, out)) for L, h in _places()]
    hooks.append(model.norm.register_forward_hook(lambda m, a, out: norms.append(out)))
    hooks += [model.get_submodule(e.module_path).register_forward_hook(
        lambda m, args, out, key=e.key: modules.__setitem__(key, (args[0], out)))
        for e in plan.metrics]
    ids, mask = inputs()
    with torch.no_grad():
        expected = model(ids, mask)
        for handle in hooks:
            handle.remove()
        got = compiled.graph_module(ids, mask)
    return Run(plan=plan, recorder=recorder, expected=expected, got=got, blocks=blocks,
               norms=norms, modules=modules)


def test_instrumented_outputs_equal_the_uninstrumented_model(run):
    assert torch.equal(run.got, run.expected)
    assert set(run.recorder.calls) == set(run.plan.keys)


def test_capture_taps_receive_the_marked_values(run):
    for (layer, head), block_out in run.blocks.items():
        key = capture("resid_out", layer, head).key
        assert torch.equal(run.recorder.one(key)[0], block_out), key
    assert len(run.norms) == HEADS
    for h in range(HEADS):
        assert torch.equal(run.recorder.one(capture("final_norm", None, h).key)[0], run.norms[h])
        assert torch.equal(run.recorder.one(capture("logits", None, h).key)[0], run.expected[h])


def test_lens_is_the_final_norm_and_lm_head_on_each_resid_out(run, model):
    """Trunk layers and every head's layers: the model's own shared `norm` and `lm_head`."""
    with torch.no_grad():
        for (layer, head), block_out in run.blocks.items():
            lens = run.recorder.one(capture("lens", layer, head).key)[0]
            assert torch.equal(lens, model.lm_head(model.norm(block_out))), (layer, head)
    assert lens.shape == (*block_out.shape[:2], model.config.vocab_size)


def test_resid_in_of_a_layer_is_resid_out_of_the_one_before(run):
    for layer, head in _places():
        if layer == 0:
            continue
        before = capture("resid_out", layer - 1, head if layer - 1 >= TRUNK else None).key
        now = capture("resid_in", layer, head).key
        assert torch.equal(run.recorder.one(now)[0], run.recorder.one(before)[0])


def test_metric_taps_receive_module_input_and_output(run):
    for entry in run.plan.metrics:
        x_in, y_out = run.recorder.one(entry.key)
        assert torch.equal(x_in, run.modules[entry.key][0]), entry.key
        assert torch.equal(y_out, run.modules[entry.key][1]), entry.key


def test_two_entries_at_one_site_get_one_tap_each(model):
    first = capture("resid_out", 1)
    renamed = attrs.evolve(first, key="capture/renamed_1", name="renamed", mode="mean")
    plan = plan_of(first, renamed)
    recorder = Recorder(plan)
    compiled = compile_plan(plan, model, recorder.sinks)
    compiled.graph_module(*inputs())
    assert torch.equal(recorder.one(first.key)[0], recorder.one(renamed.key)[0])


def test_a_missing_sink_names_the_pass_and_node(model):
    plan = plan_of(capture("resid_out", 1))
    with pytest.raises(CompilerPassError) as info:
        compile_plan(plan, model, {})
    assert info.value.pass_name == "instrument"
    assert info.value.node is not None and "mark" in info.value.node
    assert "capture/resid_out_1" in str(info.value)
