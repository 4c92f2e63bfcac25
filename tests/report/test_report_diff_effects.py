"""`expc diff` on runs with interventions and effects: effect keys compare per sample (data
order) with their means named; intervention keys compare exactly whatever the tolerances;
an intervention sits before its layer's captures and effects after the logits."""

from __future__ import annotations

import json

import pytest
import torch

from expc.cli import main
from expc.report.diff import compare_values, diff_runs, render_json
from expc.report.diff_text import render_text
from expc.report.keys import forward_position, place_label
from expc.report.run_folder import open_run_folder
from expc.spec.run_format import parse_key


@pytest.fixture
def runs(write_run, ir_nodes, tmp_path):
    """`make(name, edit=None)`: a 3-head run with interventions at layers 2 and 3 and a kl
    effect, the same in every folder but for `edit`."""
    def make(name, edit=None):
        return str(write_run(
            tmp_path / name, heads=3, trunk=2,
            interventions=[ir_nodes.intervene("mlp_out", [2], [1]),
                           ir_nodes.intervene("mlp.down_proj", [3], [2], target_kind="linear",
                                              channels=[5, 1, 9])],
            effects=[ir_nodes.effect("kl", "1:", reference=0)], edit=edit))
    return make


def test_identical_runs_with_effects_are_the_same(runs):
    result = diff_runs(runs("a"), runs("b"))
    assert result.same
    effects = [k for k in result.keys if k.key.startswith("effect/")]
    assert [k.key for k in effects] == ["effect/kl/head1", "effect/kl/head2"]
    assert all(k.mean_a == k.mean_b is not None for k in effects)


def test_a_changed_sample_of_an_effect_is_named_with_both_means(runs, capsys):
    def perturb(tensors):
        tensors["effect/kl/head2"][3] += 0.5

    a, b = runs("a"), runs("b", edit=perturb)
    result = diff_runs(a, b)
    first = result.first_divergence
    assert (first.key, first.place, first.status) == ("effect/kl/head2", "head2 effect kl",
                                                      "differs")
    assert first.max_abs == pytest.approx(0.5)
    va = open_run_folder(a).tensor("effect/kl/head2").double()
    vb = open_run_folder(b).tensor("effect/kl/head2").double()
    assert first.mean_a == pytest.approx(float(va.sum()) / va.numel(), rel=1e-12)
    assert first.mean_b == pytest.approx(float(vb.sum()) / vb.numel(), rel=1e-12)
    assert first.mean_b - first.mean_a == pytest.approx(0.5 / va.numel(), rel=1e-5)
    text = render_text(result)
    assert (f"note: effect/kl/head2: mean {first.mean_a:.3g} (a) vs {first.mean_b:.3g} (b)"
            in text)
    assert "first divergence: head2 effect kl (effect/kl/head2)" in text
    row = next(k for k in json.loads(render_json(result))["keys"]
               if k["key"] == "effect/kl/head2")
    assert row["mean_b"] == pytest.approx(first.mean_b)
    with pytest.raises(SystemExit) as exited:
        main(["diff", a, b])
    assert exited.value.code == 1


def test_intervention_units_compare_exactly_whatever_the_tolerances(runs):
    def swap(tensors):
        tensors["intervention/head2/mlp.down_proj_3/channels"] = torch.tensor([5, 1, 10])

    result = diff_runs(runs("a"), runs("b", edit=swap), atol=10.0, rtol=10.0)
    first = result.first_divergence
    assert (first.key, first.place, first.status) == (
        "intervention/head2/mlp.down_proj_3/channels", "head2 layer 3", "differs")
    assert first.max_abs == 1.0
    assert [k.key for k in result.keys if not k.same] == [first.key]


def test_integer_tensors_are_never_within_a_tolerance_unless_equal():
    a = torch.tensor([100000, 7])
    assert compare_values(a, a + torch.tensor([1, 0]), atol=0.5, rtol=1e-3)[0] is False
    assert compare_values(a, a.clone(), atol=0.0, rtol=0.0)[0] is True
    floats = a.double()  # floats keep their tolerances
    assert compare_values(floats, floats + torch.tensor([1, 0]), atol=0.5, rtol=1e-3)[0] is True


def test_forward_order_places_interventions_before_their_layer_and_effects_last():
    keys = ["effect/kl/head1", "capture/head1/mlp_out_2", "intervention/head1/mlp_out_2/channels",
            "capture/logits", "capture/head1/logits", "intervention/mlp_out_1/channels",
            "capture/mlp_out_1", "effect/loss", "capture/head0/resid_out_3",
            "intervention/head0/mlp.down_proj_3/channels", "meta/token_count"]
    ordered = sorted(keys, key=lambda k: (forward_position(parse_key(k)), k))
    assert ordered == [
        "meta/token_count", "intervention/mlp_out_1/channels", "capture/mlp_out_1",
        "intervention/head0/mlp.down_proj_3/channels", "capture/head0/resid_out_3",
        "intervention/head1/mlp_out_2/channels", "capture/head1/mlp_out_2", "capture/logits",
        "capture/head1/logits", "effect/loss", "effect/kl/head1"]
    assert [place_label(parse_key(k)) for k in ordered[-3:]] == [
        "head1 logits", "effect loss", "head1 effect kl"]
    assert place_label(parse_key("intervention/head1/mlp_out_2/channels")) == "head1 layer 2"
