"""`intervene`, `effect` and `hydra { trunk = auto }`: lowering to the IR and every check
`expc check` makes of them before any weight is read (contracts §4, §5).

The spec is the conftest's base experiment (builtin tiny-llama: 4 layers, hidden 64,
intermediate 128, 4 query heads in 2 KV groups) with the statements of each case; run
folders are fakes holding only a manifest (the checks read nothing else).
"""

from __future__ import annotations

import json

import pytest

from expc.spec import ir
from expc.spec.loader import load
from expc.spec.run_format import FORMAT, MANIFEST, RESULTS

from tests.spec.conftest import assert_single_diagnostic, spec_with

SPLIT = "hydra { trunk = auto  heads = 3 }\n"

CASES = [  # id, body, code, line, message, help
    ("unknown-target", SPLIT + "intervene mlp_outt[1] of heads[1] { set = zero }", "unknown", 8,
     "unknown intervention target `mlp_outt`", "did you mean `mlp_out`"),
    ("unknown-role", SPLIT + "intervene mlp.down_prj[1] of heads[1] { set = zero }", "unknown", 8,
     "unknown intervention target", "`mlp.down_proj`"),
    ("attn-pattern", SPLIT + "intervene attn_pattern[1] of heads[1] { set = zero }", "target", 8,
     "`attn_pattern` is a readout", "attn_out"),
    ("lens", SPLIT + "intervene lens[1] of heads[1] { set = zero }", "target", 8,
     "`lens` is a readout", "resid_out"),
    ("model-wide", SPLIT + "intervene logits of heads[1] { set = zero }", "target", 8,
     "`logits` is model-wide", None),
    ("no-layers", SPLIT + "intervene mlp_out of heads[1] { set = zero }", "selector", 8,
     "say which layers", "mlp_out[*]"),
    ("no-operation", SPLIT + "intervene mlp_out[1] of heads[1] { positions = last }", "missing", 8,
     "needs an operation", "set = zero"),
    ("two-operations", SPLIT + 'intervene mlp_out[1] of heads[1] { set = zero, add = vector(run = "r", key = "k") }',
     "operation", 8, "exactly one operation", None),
    ("scale-with-set", SPLIT + "intervene mlp_out[1] of heads[1] { set = zero, scale = 2 }", "operation", 8,
     "`scale` goes with `add`", None),
    ("mean-on-module", SPLIT + 'intervene mlp.down_proj[1] of heads[1] { set = mean(run = "r") }', "operation", 8,
     "is a module", "set = zero"),
    ("mean-without-run", SPLIT + "intervene mlp_out[1] of heads[1] { set = mean }", "type", 8,
     "reads an earlier run", 'mean(run = "DIR")'),
    ("unknown-set", SPLIT + "intervene mlp_out[1] of heads[1] { set = zeros }", "unknown", 8,
     "unknown `set` value `zeros`", "`zero`"),
    ("add-needs-key", SPLIT + 'intervene mlp_out[1] of heads[1] { add = vector(run = "r") }', "missing", 8,
     "needs `key = ...`", None),
    ("fraction-range", SPLIT + "intervene mlp.down_proj[1] of heads[1] { set = zero, channels = random(fraction = 1.0) }",
     "range", 8, "strictly between 0 and 1", "count = K"),
    ("count-range", SPLIT + "intervene mlp.down_proj[1] of heads[1] { set = zero, channels = random(count = 0) }",
     "range", 8, "`count` must be >= 1", None),
    ("fraction-and-count", SPLIT + "intervene mlp.down_proj[1] of heads[1] { set = zero, channels = random(count = 2, fraction = 0.5) }",
     "type", 8, "not both", None),
    ("lowest-on-site", SPLIT + 'intervene mlp_out[1] of heads[1] { set = zero, channels = lowest(run = "r", metric = l2_norm, count = 2) }',
     "target", 8, "is a site", "random"),
    ("metric-not-for-module", SPLIT + 'intervene mlp.down_proj[1] of heads[1] { set = zero, channels = lowest(run = "r", metric = layernorm_contribution, count = 2) }',
     "metric-module", 8, "does not score `mlp.down_proj`", "norm"),
    ("positions-unknown", SPLIT + "intervene mlp_out[1] of heads[1] { set = zero, positions = final }", "unknown", 8,
     "unknown positions `final`", None),
    ("positions-field", SPLIT + 'intervene mlp_out[1] of heads[1] { set = zero, positions = field("m") }', "mask-field", 8,
     'needs a data source with the mask field `m`', 'mask_field = "m"'),
    ("of-heads-required", SPLIT + "intervene mlp_out[1] { set = zero }", "heads", 8,
     "names the heads it changes", "of heads[1]"),
    ("of-heads-without-split", "intervene mlp_out[1] of heads[1] { set = zero }", "heads", 7,
     "needs a `hydra", None),
    ("head-out-of-range", SPLIT + "intervene mlp_out[1] of heads[3] { set = zero }", "range", 8,
     "head 3 is out of range", None),
    ("trunk-layer", "hydra { trunk = 2  heads = 2 }\nintervene mlp_out[1] of heads[1] { set = zero }", "trunk", 8,
     "layer 1 sits in the shared trunk", "trunk = auto"),
    ("layer-out-of-range", SPLIT + "intervene mlp_out[7] of heads[1] { set = zero }", "range", 8,
     "layer 7 is out of range", None),
    ("duplicate-intervention", SPLIT + "intervene mlp_out[1:3] of heads[1] { set = zero }\n"
     "intervene mlp_out[2] of heads[1:] { scale = 2 }", "duplicate", 9, "already intervened on at line 8", None),
    ("trunk-auto-zero-ok-head-models", "hydra { trunk = auto  heads = 2  head_models = [\"a\"] }", "hydra-heads", 7,
     "names 1 checkpoints for 2 heads", None),
    ("vs-without-split", "effect kl vs heads[0]", "heads", 7, "compares heads of a hydra split", None),
    ("kl-without-split", "effect kl", "heads", 7, "`kl` compares a head", None),
    ("kl-needs-vs", SPLIT + "effect kl of heads[1]", "heads", 8, "say which one", "vs heads[0]"),
    ("loss-takes-no-vs", SPLIT + "effect loss vs heads[0]", "heads", 8, "takes no `vs`", None),
    ("reference-in-heads", SPLIT + "effect kl of heads[0:2] vs heads[0]", "heads", 8,
     "head 0 is the reference", None),
    ("reference-one-head", SPLIT + "effect kl vs heads[0, 1]", "heads", 8, "one reference head", None),
    ("cosine-without-at", SPLIT + "effect cosine vs heads[0]", "missing", 8, "say where", "at = resid_out[3]"),
    ("at-model-wide", SPLIT + "effect cosine vs heads[0] { at = logits[1] }", "selector", 8,
     "`at` needs a per-layer site", None),
    ("at-two-layers", SPLIT + "effect cosine vs heads[0] { at = resid_out[1:3] }", "selector", 8,
     "names one layer", None),
    ("at-in-trunk", "hydra { trunk = 2  heads = 2 }\neffect cosine vs heads[0] { at = resid_out[1] }", "range", 8,
     "sits in the shared trunk", None),
    ("duplicate-effect", SPLIT + "effect kl vs heads[0]\neffect kl of heads[2] vs heads[0] { mask = last }",
     "duplicate", 9, "same `effect/kl` keys", "as NAME"),
    ("logit-diff-fields", 'effect logit_diff { correct = field("a") }', "missing", 7,
     "needs `wrong = field(\"name\")`", None),
    ("unknown-effect", "effect kll", "unknown", 7, "unknown effect metric `kll`", "`kl`"),
    ("unknown-effect-param", SPLIT + "effect kl vs heads[0] { masks = last }", "unknown", 8,
     "unknown `kl` parameter `masks`", "`mask`"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_intervention_check(diagnose, case):
    _, body, *expected = case
    assert_single_diagnostic(diagnose(spec_with(body)), *expected)


def test_loss_on_an_encoder_is_an_error(diagnose):
    spec = spec_with("effect loss").replace("tiny-llama", "tiny-bert")
    (d,) = diagnose(spec)
    assert d.code == "effect" and "no LM head" in d.message


def test_the_contract_example_lowers_to_the_ir(write):
    body = (SPLIT.replace("3", "4")
            + 'intervene mlp_out[3] of heads[1] { set = zero }\n'
            'intervene resid_out[2] of heads[2] { add = vector(run = "runs/steer", key = '
            '"capture/diff_2"), scale = 4.0, positions = last }\n'
            'intervene mlp.down_proj[*] of heads[3] { set = zero, channels = lowest(run = '
            '"runs/scores", metric = channel_contribution, fraction = 0.25) }\n'
            "intervene input_layernorm[2:] of heads[1] { scale = 0.5, positions = [0, -1] }\n"
            "effect kl of heads[1:] vs heads[0]\n"
            "effect loss of heads[*]\n"
            "effect cosine vs heads[0] as cos { at = resid_out[3], aggregate = mean(mask = last) }")
    exp = load(write(spec_with(body)), check_model=False)
    assert exp.hydra.trunk is None
    zero, add, pruned, norm = exp.interventions
    assert (zero.target_kind, zero.operation.kind, zero.positions.kind) == ("site", "zero", "all")
    assert add.operation == ir.Operation(kind="add", run="runs/steer", key="capture/diff_2",
                                         scale=4.0)
    assert add.positions.kind == "last"
    assert pruned.target_kind == "linear"
    assert pruned.channels == ir.Units(kind="lowest", run="runs/scores",
                                       metric="channel_contribution", fraction=0.25)
    assert (norm.target_kind, norm.operation.kind, norm.positions.indices) == ("norm", "scale", (0, -1))
    kl, loss, cos = exp.effects
    assert (kl.reference, kl.heads.text()) == (0, "1:")
    assert (loss.reference, loss.metric) == (None, "loss")
    assert (cos.key_name, cos.at_site, cos.at_layer, cos.aggregate.mask.kind) == ("cos", "resid_out", 3, "last")
    assert add.operation.span.line == 9  # spans point at the statement parts


def test_trunk_zero_and_auto_are_allowed(diagnose):
    assert diagnose(spec_with("hydra { trunk = 0  heads = 2 }")) == ()
    assert diagnose(spec_with("hydra { trunk = auto  heads = 2 }")) == ()
    # auto splits below the first intervened layer, so layer 1 sits inside the heads
    assert diagnose(spec_with(SPLIT + "intervene mlp_out[1] of heads[1] { set = zero }")) == ()


def test_interventions_without_a_split_change_the_one_model(diagnose):
    assert diagnose(spec_with("intervene mlp_out[1] { set = zero }\neffect loss")) == ()


# run folders ---------------------------------------------------------------------------
def _run_folder(root, name, tensors, status="complete"):
    folder = root / name
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "status": status, "tensors": {
        key: {"shape": shape} for key, shape in tensors.items()}}))
    (folder / RESULTS).write_bytes(b"")
    return name


def test_mean_reads_the_dataset_mean_of_the_unsplit_run(workdir, diagnose):
    _run_folder(workdir, "src", {"capture/mlp_out_2": [64]})
    body = SPLIT + 'intervene mlp_out[2] of heads[1] { set = mean(run = "src") }'
    assert diagnose(spec_with(body)) == ()


@pytest.mark.parametrize("tensors, status, message", [
    ({}, "complete", "holds no dataset_mean capture of mlp_out at layer 2 (looked for "
     "`capture/head1/mlp_out_2`, `capture/mlp_out_2`, `capture/head0/mlp_out_2`)"),
    ({"capture/mlp_out_2": [128]}, "complete", "has shape [128]; this intervention needs [64]"),
    ({"capture/mlp_out_2": [64]}, "running", "is not a finished run (status `running`)"),
])
def test_a_bad_source_is_named_at_the_operation(workdir, diagnose, tensors, status, message):
    _run_folder(workdir, "src", tensors, status=status)
    body = SPLIT + 'intervene mlp_out[2] of heads[1] { set = mean(run = "src") }'
    (d,) = diagnose(spec_with(body))
    assert (d.code, d.span.line, d.span.col) == ("intervention-source", 8, 40)
    assert message in d.message


def test_a_missing_run_folder_is_an_error_but_not_without_the_model(diagnose):
    body = SPLIT + 'intervene mlp_out[2] of heads[1] { set = patch(run = "nowhere") }'
    (d,) = diagnose(spec_with(body))
    assert "run folder `nowhere` does not exist" in d.message
    assert diagnose(spec_with(body), check_model=False) == ()


def test_scores_of_kv_heads_and_vectors_have_the_model_widths(workdir, diagnose):
    _run_folder(workdir, "scores", {
        "importance/kv_head_contribution/head2/layers.3.self_attn.o_proj/score": [2],
        "importance/channel_contribution/layers.3.mlp.down_proj/score": [64],
        "capture/diff": [64]})
    good = (SPLIT + 'intervene self_attn.o_proj[3] of heads[2] { set = zero, channels = lowest('
            'run = "scores", metric = kv_head_contribution, count = 1) }\n'
            'intervene resid_out[3] of heads[1] { add = vector(run = "scores", key = "capture/diff") }')
    assert diagnose(spec_with(good)) == ()
    wide = (SPLIT + 'intervene mlp.down_proj[3] of heads[1] { set = zero, channels = highest('
            'run = "scores", metric = channel_contribution, count = 1) }')
    (d,) = diagnose(spec_with(wide))  # down_proj's input is the intermediate width, 128
    assert "has shape [64]; this intervention needs [128]" in d.message


def test_set_reaches_interventions_and_effects(diagnose):
    body = (SPLIT + "intervene mlp.down_proj[1] of heads[1] { scale = 2 }\n"
            "effect kl vs heads[0]")
    assert diagnose(spec_with(body), overrides=["intervene.mlp.down_proj.scale=3",
                                                "effect.kl.mask=last", "hydra.trunk=auto"]) == ()
    (d,) = diagnose(spec_with(body), overrides=["intervene.mlp.down_proj.set=zero"])
    assert "`scale` goes with `add`" in d.message
    (d,) = diagnose(spec_with(body), overrides=["intervene.mlp_out.scale=3"])
    assert "no intervene named `mlp_out`" in d.message and any("mlp.down_proj" in h for h in d.help)


def test_set_hydra_trunk_to_a_number_meets_the_trunk_check(diagnose):
    body = SPLIT + "intervene mlp_out[1] of heads[1] { set = zero }"
    (d,) = diagnose(spec_with(body), overrides=["hydra.trunk=2"])
    assert d.code == "trunk"


def test_extends_overrides_interventions_and_effects(write):
    base = spec_with(SPLIT + "intervene mlp_out[1] of heads[1] { set = zero }\n"
                     "intervene mlp_out[2] of heads[2] { set = zero }\neffect kl vs heads[0]")
    child = base + ("experiment u extends t {\n"
                    "    intervene mlp_out[1] of heads[1] { scale = 0.5 }\n"
                    "    effect kl vs heads[0] { mask = last }\n}\n")
    exp = load(write(child), check_model=False)
    assert [i.operation.kind for i in exp.interventions] == ["zero", "scale"]
    assert [i.layers.text() for i in exp.interventions] == ["2", "1"]
    (kl,) = exp.effects
    assert kl.mask.kind == "last"


def test_a_missing_equals_in_an_intervention_body_is_named(diagnose):
    (d,) = diagnose(spec_with(SPLIT + "intervene mlp_out[1] of heads[1] { set zero }"))
    assert d.code == "syntax" and "missing `=`" in d.message
