"""Metrics of whole layers (`importance block_influence at layers[...]`): planned per layer
and head under the layer's path, and fed by one tap with the layer's `resid_in` and
`resid_out` — checked against the eager model's block inputs and outputs (forward hooks)."""

from __future__ import annotations

import textwrap

import torch

from compiler_support import LAYOUT, EditRecorder, Recorder, inputs, intervention, plan_of
from expc import spec
from expc.compiler.pipeline import compile_plan
from expc.compiler.plan import MetricEntry, build_plan
from expc.spec.run_format import importance_key

SITES = ("resid_in", "resid_out")


def _plan(tmp_path, statement: str):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n')
    path = tmp_path / "p.exp"
    path.write_text(textwrap.dedent(f"""\
        experiment p {{
            model = "builtin:tiny-llama"
            hydra {{ trunk = 2  heads = 3 }}
            data {{ source = jsonl("{data}", field = "text") }}
            {statement}
        }}
        """))
    return build_plan(spec.load(path), n_layers=4)


def test_plan_keys_each_layer_by_its_path_in_the_hydra_model(tmp_path):
    plan = _plan(tmp_path, "importance block_influence at layers[*]")
    assert [e.key for e in plan.metrics] == [
        "importance/block_influence/layers.0", "importance/block_influence/layers.1",
        *(f"importance/block_influence/head{h}/layers.2" for h in range(3)),
        *(f"importance/block_influence/head{h}/layers.3" for h in range(3))]
    entry = plan.metrics[-1]
    assert (entry.module, entry.module_path, entry.layer, entry.head, entry.sites) == (
        "layers", "heads.2.layers.3", 3, 2, SITES)
    assert plan.layer_metrics == plan.metrics and plan.module_metrics == ()


def test_of_heads_narrows_the_layers_inside_the_heads(tmp_path):
    plan = _plan(tmp_path, "importance block_influence at layers[1:] of heads[1]\n"
                           "importance l2_norm at mlp.down_proj[3]")
    assert [e.key for e in plan.layer_metrics] == [
        "importance/block_influence/layers.1", "importance/block_influence/head1/layers.2",
        "importance/block_influence/head1/layers.3"]
    assert [e.module_path for e in plan.module_metrics] == [
        f"heads.{h}.layers.3.mlp.down_proj" for h in range(3)]


def _entry(layer: int, head: int | None) -> MetricEntry:
    path = LAYOUT.layer_path(layer, head)
    return MetricEntry(key=importance_key("block_influence", path), metric="block_influence",
                       module="layers", module_path=path, layer=layer, head=head, sites=SITES)


def _block_io(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every block's (input, output) by module path, from forward hooks."""
    io = {}
    handles = [module.register_forward_hook(
        lambda m, args, out, name=name: io.__setitem__(name, (args[0], out)))
        for name, module in model.named_modules()
        if name.split(".")[-2:-1] == ["layers"]]
    try:
        with torch.no_grad():
            model(*inputs())
    finally:
        for handle in handles:
            handle.remove()
    return io


def test_one_tap_feeds_the_layer_s_input_and_output(model):
    entries = [_entry(0, None), _entry(1, None), _entry(2, 0), _entry(3, 2)]
    plan = plan_of(*entries)
    recorder = Recorder(plan)
    compiled = compile_plan(plan, model, recorder.sinks)
    with torch.no_grad():
        compiled.graph_module(*inputs())
    io = _block_io(model)
    for entry in entries:
        x_in, y_out = recorder.one(entry.key)
        assert torch.equal(x_in, io[entry.module_path][0]), entry.key
        assert torch.equal(y_out, io[entry.module_path][1]), entry.key
    assert "heads_1_" not in compiled.graph_module.code  # nothing reads head 1


def test_an_intervened_head_feeds_its_layer_the_edited_output(model):
    edit = intervention("mlp_out", 3, 1)
    plan = plan_of(edit, _entry(3, 0), _entry(3, 1))
    recorder, edits = Recorder(plan), EditRecorder(plan)
    with torch.no_grad():
        compile_plan(plan, model, recorder.sinks, edits.edits).graph_module(*inputs())
    io = _block_io(model)
    (mlp_out, edited), = edits.seen[edit.key]
    plain_in, plain_out = recorder.one(_entry(3, 0).key)
    head_in, head_out = recorder.one(_entry(3, 1).key)
    assert torch.equal(plain_out, io["heads.0.layers.3"][1])
    assert torch.equal(head_in, io["heads.1.layers.3"][0])
    torch.testing.assert_close(head_out, io["heads.1.layers.3"][1] - mlp_out + edited)
