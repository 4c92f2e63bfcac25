"""Intervene: one edit per intervention, in its head only, checked against forward hooks.

The reference is the eager model with a PyTorch forward hook that applies the same edit by
hand to the module whose input or output is the intervened value (`mlp_out` is the `mlp`
module's output, `resid_out` the block's, a linear target the module's input, a norm target
its output). The heads without an intervention must stay bitwise the unedited model.
"""

from __future__ import annotations

import pytest
import torch

from compiler_support import (
    HEADS, LAYOUT, EditRecorder, Recorder, capture, doubling, inputs, intervention, metric, plan_of,
)
from expc.compiler.attention import explicit_attention
from expc.compiler.edits import Edit, is_edit
from expc.compiler.instrument import instrument
from expc.compiler.manager import CompilerPassError, run_passes
from expc.compiler.pipeline import compile_plan
from expc.compiler.prune import prune
from expc.compiler.resolve import resolve
from expc.compiler.strip import strip
from expc.models.hydra_split import HydraSplit
from expc.models.loading import load_model
from expc.models.tracing import trace
from expc.spec.diagnostics import DiagnosticError


def _double_output(module, args, output):
    return doubling(output)


def _double_input(module, args):
    return (doubling(args[0]), *args[1:])


# target -> (kind, module under the block whose hook does the same edit, which side)
TARGETS = {
    "resid_in": ("site", "", "input"),
    "attn_in": ("site", "input_layernorm", "output"),
    "attn_out": ("site", "self_attn", "output"),
    "mlp_in": ("site", "post_attention_layernorm", "output"),
    "mlp_out": ("site", "mlp", "output"),
    "resid_out": ("site", "", "output"),
    "values": ("site", "self_attn.v_proj", "output"),
    "mlp.down_proj": ("linear", "mlp.down_proj", "input"),
    "self_attn.o_proj": ("linear", "self_attn.o_proj", "input"),
    "mlp.gate_proj": ("linear", "mlp.gate_proj", "input"),
    "post_attention_layernorm": ("norm", "post_attention_layernorm", "output"),
    "input_layernorm": ("norm", "input_layernorm", "output"),
}


def _hooked_logits(model, path: str, side: str, ids, mask) -> torch.Tensor:
    module = model.get_submodule(path)
    handle = (module.register_forward_hook(_double_output) if side == "output"
              else module.register_forward_pre_hook(_double_input))
    try:
        with torch.no_grad():
            return model(ids, mask)
    finally:
        handle.remove()


def _compiled_logits(model, plan, edits) -> torch.Tensor:
    compiled = compile_plan(plan, model, edits=edits, keep_output=True)
    with torch.no_grad():
        return compiled.graph_module(*inputs())


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("layer", [2, 3])
def test_each_target_matches_a_forward_hook_reference(model, target, layer):
    kind, module, side = TARGETS[target]
    plan = plan_of(intervention(target, layer, 1, kind=kind))
    edits = EditRecorder(plan)
    got = _compiled_logits(model, plan, edits.edits)
    ids, mask = inputs()
    with torch.no_grad():
        plain = model(ids, mask)
    path = f"heads.1.layers.{layer}" + (f".{module}" if module else "")
    expected = _hooked_logits(model, path, side, ids, mask)
    assert torch.equal(got[1], expected[1])
    assert not torch.equal(got[1], plain[1])
    for head in (0, 2):  # untouched heads: bitwise the unedited model
        assert torch.equal(got[head], plain[head])
    assert len(edits.seen[plan.interventions[0].key]) == 1


def test_without_a_split_the_one_model_is_edited():
    single = load_model("builtin:tiny-llama")
    layout = HydraSplit.single(LAYOUT.n_layers)
    plan = plan_of(intervention("mlp_out", 1, None), layout=layout)
    got = _compiled_logits(single, plan, EditRecorder(plan).edits)
    ids, mask = inputs()
    assert torch.equal(got, _hooked_logits(single, "layers.1.mlp", "output", ids, mask))


def _seen_by_hook(model, path: str, side: str) -> torch.Tensor:
    seen = []
    module = model.get_submodule(path)
    handle = (module.register_forward_hook(lambda m, a, out: seen.append(out)) if side == "output"
              else module.register_forward_pre_hook(lambda m, a: seen.append(a[0])))
    try:
        with torch.no_grad():
            model(*inputs())
    finally:
        handle.remove()
    return seen[0]


def test_a_linear_edit_sees_the_module_input(model):
    plan = plan_of(intervention("self_attn.o_proj", 3, 2, kind="linear"))
    edits = EditRecorder(plan)
    _compiled_logits(model, plan, edits.edits)
    (x, y), = edits.seen[plan.interventions[0].key]
    module_input = _seen_by_hook(model, "heads.2.layers.3.self_attn.o_proj", "input")
    assert x.shape == (3, 7, 64) and torch.equal(x, module_input)
    assert torch.equal(y, 2 * module_input)


def test_a_norm_edit_sees_the_module_output(model):
    plan = plan_of(intervention("post_attention_layernorm", 2, 0, kind="norm"))
    edits = EditRecorder(plan)
    _compiled_logits(model, plan, edits.edits)
    (x, _), = edits.seen[plan.interventions[0].key]
    norm_output = _seen_by_hook(model, "heads.0.layers.2.post_attention_layernorm", "output")
    assert torch.equal(x, norm_output)


def test_captures_and_metrics_at_the_intervened_place_see_the_edited_value(model):
    site = intervention("mlp_out", 3, 1)
    norm = intervention("post_attention_layernorm", 2, 1, kind="norm")
    linear = intervention("mlp.down_proj", 2, 1, kind="linear")
    readers = [capture("mlp_out", 3, 1), capture("mlp_out", 3, 0),
               metric("l2_norm", "post_attention_layernorm", 2, 1),
               metric("l2_norm", "mlp.down_proj", 2, 1)]
    plan = plan_of(site, norm, linear, *readers)
    edits, recorder = EditRecorder(plan), Recorder(plan)
    compile_plan(plan, model, recorder.sinks, edits.edits).graph_module(*inputs())
    (_, edited_site), = edits.seen[site.key]
    assert torch.equal(recorder.one(readers[0].key)[0], edited_site)
    (_, edited_norm), = edits.seen[norm.key]
    assert torch.equal(recorder.one(readers[2].key)[1], edited_norm)
    (_, edited_input), = edits.seen[linear.key]
    assert torch.equal(recorder.one(readers[3].key)[0], edited_input)
    plain_mlp = _seen_by_hook(model, "heads.0.layers.3.mlp", "output")
    assert torch.equal(recorder.one(readers[1].key)[0], plain_mlp)


@pytest.mark.parametrize("kind,target", [("site", "mlp_out"), ("linear", "mlp.down_proj"),
                                         ("norm", "input_layernorm")])
def test_two_interventions_on_one_place_chain_in_plan_order(model, kind, target):
    first, second = intervention(target, 3, 1, kind=kind), intervention(target, 3, 1, kind=kind)
    plan = plan_of(first, second)
    calls = []

    def plus_one_then_double(x):  # both entries share a key: the first call is the first edit
        calls.append(x)
        return x + 1 if len(calls) == 1 else 2 * x
    got = _compiled_logits(model, plan, {first.key: plus_one_then_double})
    ids, mask = inputs()
    path = "heads.1.layers.3." + TARGETS[target][1]
    module = model.get_submodule(path)
    if TARGETS[target][2] == "output":
        handle = module.register_forward_hook(lambda m, a, out: 2 * (out + 1))
    else:
        handle = module.register_forward_pre_hook(lambda m, a: (2 * (a[0] + 1),))
    try:
        with torch.no_grad():
            expected = model(ids, mask)
    finally:
        handle.remove()
    assert torch.equal(got[1], expected[1])


def _todays_passes(plan):
    return [resolve.configured(plan=plan), explicit_attention,
            instrument.configured(sinks=None), strip, prune.configured(keep_output=True)]


def test_a_plan_without_interventions_compiles_to_todays_graph(model):
    plan = plan_of(capture("resid_out", 1), capture("mlp_out", 3, 2),
                   metric("l2_norm", "mlp.down_proj", 2, 0), capture("attn_pattern", 3, 1))
    today = run_passes(trace(model), _todays_passes(plan))
    now = compile_plan(plan, model, keep_output=True).graph_module
    assert str(now.graph) == str(today.graph)
    assert now.code == today.code


@pytest.mark.parametrize("kind,target", [("site", "resid_in"), ("linear", "self_attn.o_proj"),
                                         ("norm", "post_attention_layernorm")])
def test_the_edit_is_the_only_new_node(model, kind, target):
    """Take the one edit node out again and the graph is today's, node for node: the trunk
    and every other head are untouched (and the edited head differs only by the edit)."""
    readers = [capture("resid_out", 3, h) for h in range(HEADS)]
    plan = plan_of(intervention(target, 2, 1, kind=kind), *readers)
    gm = compile_plan(plan, model, keep_output=True).graph_module
    edits = [node for node in gm.graph.nodes if is_edit(node)]
    assert len(edits) == 1 and isinstance(gm.get_submodule(edits[0].target), Edit)
    edits[0].replace_all_uses_with(edits[0].args[0])
    gm.graph.erase_node(edits[0])
    today = run_passes(trace(model), _todays_passes(plan_of(*readers)))
    assert str(gm.graph) == str(today.graph)


def test_the_graph_names_each_edit_after_its_key(model):
    plan = plan_of(intervention("mlp_out", 3, 1),
                   intervention("mlp.down_proj", 2, 2, kind="linear"))
    text = str(compile_plan(plan, model, keep_output=True).graph_module.graph)
    assert "call_module[target=expc_edits.e0_intervention_head1_mlp_out_3]" in text
    assert "call_module[target=expc_edits.e1_intervention_head2_mlp_down_proj_2]" in text


def test_an_edit_nothing_reads_is_pruned(model):
    plan = plan_of(intervention("mlp_out", 3, 1), capture("resid_out", 3, 0))
    gm = compile_plan(plan, model).graph_module
    assert not [n for n in gm.graph.nodes if is_edit(n)]
    assert "heads_1" not in gm.code


@pytest.mark.parametrize("target,kind,what", [
    ("attn_pattern", "site", "capture site `attn_pattern` in layer 3 of head 1"),
    ("mlp.nowhere", "linear", "module `heads.1.layers.3.mlp.nowhere`"),
])
def test_a_target_the_model_lacks_is_a_diagnostic(model, target, kind, what):
    plan = plan_of(intervention(target, 3, 1, kind=kind))
    with pytest.raises(DiagnosticError) as info:
        compile_plan(plan, model)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "compile-unresolved" and what in diagnostic.message


def test_a_missing_edit_names_the_key(model):
    plan = plan_of(intervention("mlp_out", 3, 1))
    with pytest.raises(CompilerPassError) as info:
        compile_plan(plan, model, edits={})
    assert info.value.pass_name == "intervene"
    assert "intervention/head1/mlp_out_3" in str(info.value)
