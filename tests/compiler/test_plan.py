"""The plan: result keys exactly as contracts §3, from specs written in the language."""

from __future__ import annotations

import textwrap

import attrs
import pytest

from expc import spec
from expc.compiler.plan import build_plan
from expc.spec import ir

HYDRA = "hydra { trunk = 2\n heads = 3 }"


def _experiment(tmp_path, statements: str, *, hydra: str = HYDRA) -> ir.Experiment:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n' * 32)  # 4 batches: enough for iterations = 4
    path = tmp_path / "p.exp"
    path.write_text(textwrap.dedent(f"""\
        experiment p {{
            model = "builtin:tiny-llama"
            {hydra}
            data {{ source = jsonl("{data}", field = "text") }}
        {textwrap.indent(textwrap.dedent(statements), "    ")}
            output {{ dir = "runs/p" }}
        }}
        """))
    return spec.load(path)


def _plan(tmp_path, statements: str, *, hydra: str = HYDRA):
    return build_plan(_experiment(tmp_path, statements, hydra=hydra), n_layers=4)


def _keys(entries) -> list[str]:
    return [e.key for e in entries]


def test_layers_in_the_trunk_and_in_every_head(tmp_path):
    plan = _plan(tmp_path, "capture resid_out[*] { aggregate = mean(mask = attention) }")
    assert _keys(plan.captures) == [
        "capture/resid_out_0", "capture/resid_out_1",
        "capture/head0/resid_out_2", "capture/head1/resid_out_2", "capture/head2/resid_out_2",
        "capture/head0/resid_out_3", "capture/head1/resid_out_3", "capture/head2/resid_out_3",
    ]
    head_entry = plan.captures[3]
    assert (head_entry.site, head_entry.layer, head_entry.head) == ("resid_out", 2, 1)
    assert (head_entry.mode, head_entry.mask) == ("mean", "attention")


def test_as_renames_and_of_heads_narrows(tmp_path):
    plan = _plan(tmp_path, """\
        capture resid_out[-1] of heads[1] as last { aggregate = mean(mask = last) }
        capture mlp_out[0, 2:4] of heads[0] { aggregate = full }
        """)
    assert _keys(plan.captures) == [
        "capture/head1/last_3", "capture/mlp_out_0", "capture/head0/mlp_out_2",
        "capture/head0/mlp_out_3",
    ]
    assert plan.captures[0].site == "resid_out" and plan.captures[0].name == "last"
    assert plan.captures[0].span.line > 1


def test_model_wide_sites(tmp_path):
    statements = """\
        capture embed { aggregate = full }
        capture final_norm { aggregate = full }
        capture logits of heads[2] { aggregate = full }
        """
    split = _plan(tmp_path, statements)
    assert _keys(split.captures) == [
        "capture/embed", "capture/head0/final_norm", "capture/head1/final_norm",
        "capture/head2/final_norm", "capture/head2/logits",
    ]
    assert [c.head for c in split.captures] == [None, 0, 1, 2, 2]
    whole = _plan(tmp_path, statements.replace(" of heads[2]", ""), hydra="")
    assert _keys(whole.captures) == ["capture/embed", "capture/final_norm", "capture/logits"]
    assert [c.head for c in whole.captures] == [None, None, None]


def test_without_a_split_every_layer_is_in_the_trunk(tmp_path):
    plan = _plan(tmp_path, "capture resid_out[2:] { aggregate = full }", hydra="")
    assert _keys(plan.captures) == ["capture/resid_out_2", "capture/resid_out_3"]
    assert {c.head for c in plan.captures} == {None}


def test_none_aggregation_plans_nothing(tmp_path):
    plan = _plan(tmp_path, "capture resid_out[*] { aggregate = none }")
    assert plan.captures == () and plan.keys == ()


def test_importance_keys_module_paths_and_params(tmp_path):
    plan = _plan(tmp_path, """\
        importance kv_head_contribution at self_attn.o_proj[1, 3] { optimize_for = latency }
        importance iterative_channel at mlp.down_proj[3] of heads[2] { iterations = 4 }
        """)
    assert _keys(plan.metrics) == [
        "importance/kv_head_contribution/layers.1.self_attn.o_proj",
        "importance/kv_head_contribution/head0/layers.3.self_attn.o_proj",
        "importance/kv_head_contribution/head1/layers.3.self_attn.o_proj",
        "importance/kv_head_contribution/head2/layers.3.self_attn.o_proj",
        "importance/iterative_channel/head2/layers.3.mlp.down_proj",
    ]
    assert [m.module_path for m in plan.metrics[:2]] == [
        "layers.1.self_attn.o_proj", "heads.0.layers.3.self_attn.o_proj"]
    assert plan.metrics[0].params["optimize_for"] == "latency"
    assert plan.metrics[-1].params["iterations"] == 4
    with pytest.raises(TypeError):
        plan.metrics[-1].params["iterations"] = 5  # plans are read-only
    assert len(set(plan.metrics)) == len(plan.metrics)  # and hashable


def test_the_quickstart_plans_every_statement():
    plan = build_plan(spec.load("examples/quickstart.exp"), n_layers=4)
    assert len(plan.captures) == 8 + 1 + 3
    assert "capture/attn_out_1" in plan.keys
    assert "capture/head2/resid_last_3" in plan.keys
    assert len(plan.metrics) == 4 * 8 + 3
    assert len(set(plan.keys)) == len(plan.keys)


def _with(tmp_path, *, interventions=(), effects=(), hydra: str = HYDRA):
    """A spec's experiment with IR nodes added directly (the parser for them lives elsewhere)."""
    experiment = attrs.evolve(_experiment(tmp_path, "", hydra=hydra),
                              interventions=tuple(interventions), effects=tuple(effects))
    return build_plan(experiment, n_layers=4)


def _layers(*items) -> ir.IndexSelector:
    return ir.IndexSelector(items=items)


ZERO = ir.Operation(kind="zero")


def test_interventions_one_entry_per_layer_and_named_head(tmp_path):
    site = ir.Intervention(target="mlp_out", target_kind="site", heads=_layers(1, 2),
                           layers=_layers(ir.Slice(start=2, stop=4)), operation=ZERO)
    linear = ir.Intervention(target="self_attn.o_proj", target_kind="linear", layers=_layers(-1),
                             heads=_layers(2), operation=ZERO)
    norm = ir.Intervention(target="input_layernorm", target_kind="norm", layers=_layers(2),
                           heads=_layers(0), operation=ZERO)
    plan = _with(tmp_path, interventions=[site, linear, norm])
    assert _keys(plan.interventions) == [
        "intervention/head1/mlp_out_2", "intervention/head2/mlp_out_2",
        "intervention/head1/mlp_out_3", "intervention/head2/mlp_out_3",
        "intervention/head2/self_attn.o_proj_3", "intervention/head0/input_layernorm_2",
    ]
    first, o_proj, ln = plan.interventions[0], plan.interventions[4], plan.interventions[5]
    assert (first.kind, first.site, first.module_path, first.layer, first.head) == (
        "site", "mlp_out", None, 2, 1)
    assert first.intervention is site
    assert (o_proj.kind, o_proj.site, o_proj.module_path) == (
        "linear", None, "heads.2.layers.3.self_attn.o_proj")
    assert (ln.kind, ln.module_path) == ("norm", "heads.0.layers.2.input_layernorm")
    assert plan.keys == ()  # interventions feed no sink


def test_interventions_without_a_split_change_the_one_model(tmp_path):
    iv = ir.Intervention(target="mlp.down_proj", target_kind="linear", layers=_layers(1),
                         operation=ZERO)
    plan = _with(tmp_path, interventions=[iv], hydra="")
    (entry,) = plan.interventions
    assert (entry.key, entry.head, entry.module_path) == (
        "intervention/mlp.down_proj_1", None, "layers.1.mlp.down_proj")


def test_effects_every_head_but_the_reference_or_the_named_ones(tmp_path):
    kl = ir.Effect(metric="kl", reference=0)
    loss = ir.Effect(metric="loss")
    named = ir.Effect(metric="cosine", heads=_layers(2), reference=1, name="cos",
                      at_site="resid_out", at_layer=3)
    plan = _with(tmp_path, effects=[kl, loss, named])
    assert _keys(plan.effects) == [
        "effect/kl/head1", "effect/kl/head2",
        "effect/loss/head0", "effect/loss/head1", "effect/loss/head2", "effect/cos/head2",
    ]
    assert [(e.head, e.reference) for e in plan.effects] == [
        (1, 0), (2, 0), (0, None), (1, None), (2, None), (2, 1)]
    assert plan.effects[-1].effect is named and plan.effects[0].metric == "kl"
    assert set(_keys(plan.effects)) <= set(plan.keys)


def test_an_effect_without_a_split_has_one_unlabelled_key(tmp_path):
    plan = _with(tmp_path, effects=[ir.Effect(metric="loss", name="ce")], hydra="")
    (entry,) = plan.effects
    assert (entry.key, entry.head) == ("effect/ce", None)
