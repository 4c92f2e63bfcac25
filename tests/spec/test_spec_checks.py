"""One test per semantic check: each bad spec yields exactly the expected diagnostic."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.spec.conftest import assert_single_diagnostic, spec_with

BODY_LINE = 7  # the first line of BODY in the base spec

# (id, body, code, line, message fragment, help fragment or None)
BODY_CASES = [
    ("unknown-key", "sed = 1", "unknown", 7, "unknown key `sed`", "`seed`"),
    ("unknown-block", "hydr { trunk = 1 heads = 2 }", "unknown", 7, "unknown block `hydr`", "`hydra`"),
    ("setting-as-block", "seed { x = 1 }", "type", 7, "`seed` is a setting", "seed = ..."),
    ("block-as-setting", "hydra = 2", "type", 7, "`hydra` is a block", None),
    ("duplicate-key", "seed = 1\nseed = 2", "duplicate", 8, "duplicate key `seed`", "line 7"),
    ("duplicate-block-key", "output {\n    dir = \"a\"\n    dir = \"b\"\n}", "duplicate", 9,
     "duplicate key `dir` in `output`", None),
    ("unknown-site", "capture resid_ou[0]", "unknown", 7, "unknown capture site `resid_ou`", "`resid_out`"),
    ("layer-site-needs-layers", "capture resid_out", "selector", 7, "per-layer site", "resid_out[*]"),
    ("model-site-takes-no-layers", "capture logits[0]", "selector", 7, "model-wide", None),
    ("unknown-aggregate", "capture resid_out[0] { aggregate = maen }", "unknown", 7,
     "unknown aggregation mode `maen`", "`mean`"),
    ("unknown-aggregate-call", "capture resid_out[0] { aggregate = avg(mask = last) }", "unknown", 7,
     "unknown aggregation mode `avg`", None),
    ("unknown-mask", "capture resid_out[0] { aggregate = mean(mask = frist) }", "unknown", 7,
     "unknown mask `frist`", "`first`"),
    ("field-mask-needs-name", "capture resid_out[0] { aggregate = sum(mask = field) }", "type", 7,
     "field mask names its data field", 'field("name")'),
    ("mask-positional", "capture resid_out[0] { aggregate = max(last) }", "type", 7,
     "mask is a named argument", None),
    ("full-takes-no-args", "capture resid_out[0] { aggregate = full(mask = last) }", "type", 7,
     "`full` takes no arguments", None),
    ("unknown-capture-key", "capture resid_out[0] { agregate = full }", "unknown", 7,
     "unknown capture key `agregate`", "`aggregate`"),
    ("unknown-metric", "importance l2norm at mlp.down_proj[*]", "unknown", 7,
     "unknown importance metric `l2norm`", "`l2_norm`"),
    ("unknown-module", "importance l2_norm at mlp.down_prj[*]", "unknown", 7,
     "unknown module `mlp.down_prj`", "`mlp.down_proj`"),
    ("kv-head-needs-o-proj", "importance kv_head_contribution at mlp.down_proj[*]", "metric-module", 7,
     "cannot be computed at `mlp.down_proj`", "self_attn.o_proj"),
    ("layernorm-needs-norm", "importance layernorm_contribution at mlp.up_proj[*]", "metric-module", 7,
     "cannot be computed", "norm module"),
    ("channel-needs-linear", "importance channel_contribution at input_layernorm[*]", "metric-module", 7,
     "cannot be computed", "linear module"),
    ("module-needs-layers", "importance l2_norm at mlp.down_proj", "selector", 7, "which layers", None),
    ("metric-takes-no-params", "importance l2_norm at mlp.down_proj[*] { iterations = 2 }", "unknown", 7,
     "`l2_norm` takes no parameters", None),
    ("unknown-param", "importance iterative_channel at mlp.down_proj[0] { iteration = 2 }", "unknown", 7,
     "unknown `iterative_channel` parameter `iteration`", "`iterations`"),
    ("param-type", "importance iterative_channel at mlp.down_proj[0] { iterations = \"4\" }", "type", 7,
     "`iterations` must be an integer", None),
    ("param-range", "importance iterative_channel at mlp.down_proj[0] { iterations = 0 }", "range", 7,
     "`iterations` must be >= 1", None),
    ("param-choice", "importance kv_head_contribution at self_attn.o_proj[0] { optimize_for = speed }",
     "unknown", 7, "unknown optimize_for `speed`", None),
    ("heads-without-hydra", "capture resid_out[-1] of heads[0]", "heads", 7, "needs a `hydra", None),
    ("heads-beyond-hydra", "hydra { trunk = 2 heads = 2 }\ncapture resid_out[-1] of heads[2]", "range", 8,
     "head 2 is out of range: hydra has 2 heads", None),
    ("embed-of-heads", "hydra { trunk = 2 heads = 2 }\ncapture embed of heads[0]", "heads", 8,
     "`embed` sits before the Hydra split", None),
    ("dtype-quoted", "dtype = \"float32\"", "type", 7, "`dtype` must be one of", "without quotes"),
    ("dtype-unknown", "dtype = float64", "unknown", 7, "unknown dtype `float64`", None),
    ("device-unknown", "device = gpu", "unknown", 7, "unknown device `gpu`", None),
    ("seed-negative", "seed = -1", "range", 7, "`seed` must be >= 0", None),
    ("seed-float", "seed = 1.5", "type", 7, "`seed` must be an integer", None),
    ("compile-not-bool", "compile = yes", "type", 7, "`compile` must be `true` or `false`", None),
    ("hydra-trunk-negative", "hydra { trunk = -1 heads = 2 }", "range", 7, "`hydra.trunk` must be >= 0", None),
    ("hydra-trunk-word", "hydra { trunk = deep heads = 2 }", "type", 7, "an integer or `auto`", "trunk = auto"),
    ("hydra-heads-zero", "hydra { trunk = 1 heads = 0 }", "range", 7, "`hydra.heads` must be >= 1", None),
    ("hydra-missing-key", "hydra { trunk = 1 }", "missing", 7, "`hydra` needs `heads", None),
    ("checkpoint-negative", "output { checkpoint_every = -1 }", "range", 7,
     "`checkpoint_every` must be >= 0", None),
    ("output-dir-type", "output { dir = runs }", "type", 7, "`dir` must be a string", 'quote it'),
    ("duplicate-capture-key", "capture resid_out[*] { aggregate = full }\ncapture resid_out[1] { aggregate = sum }",
     "duplicate", 8, "same `resid_out` keys", "as NAME"),
    ("duplicate-importance", "importance l2_norm at mlp.down_proj[0:2]\nimportance l2_norm at mlp.down_proj[1]",
     "duplicate", 8, "already computed", None),
]


@pytest.mark.parametrize("case", BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_body_check(diagnose, case):
    _, body, *expected = case
    assert_single_diagnostic(diagnose(spec_with(body)), *expected)


def test_clean_base_has_no_diagnostics(diagnose):
    assert diagnose(spec_with("capture resid_out[*] { aggregate = mean(mask = last) }")) == ()


def test_as_name_removes_the_key_collision(diagnose):
    body = "capture resid_out[*] { aggregate = full }\ncapture resid_out[1] as r1 { aggregate = sum }"
    assert diagnose(spec_with(body)) == ()


def test_aggregate_none_does_not_collide(diagnose):
    body = "capture resid_out[*] { aggregate = full }\ncapture resid_out[1] { aggregate = none }"
    assert diagnose(spec_with(body)) == ()


def test_cuda_index_device_is_accepted(diagnose, monkeypatch):
    # Whether the GPU exists is a check of this machine, like the data file (issue 12).
    assert diagnose(spec_with("device = cuda:1"), check_model=False) == ()
    monkeypatch.setattr("expc.spec.model_checks.visible_gpus", lambda: 2)
    assert diagnose(spec_with("device = cuda:1")) == ()


def test_every_problem_is_reported_at_once_sorted(diagnose):
    diags = diagnose(spec_with("seed = x\ncapture resid_ou[0]\nimportance l2 at mlp.down_proj[*]"))
    assert [d.span.line for d in diags] == [7, 8, 9]


SETTINGS_CASES = [
    ("missing-model", 'experiment t {\n data { source = jsonl("data.jsonl") }\n}', "missing", 1,
     "sets no `model`"),
    ("model-not-string", 'experiment t {\n model = tiny\n data { source = jsonl("data.jsonl") }\n}',
     "type", 2, "`model` must be a string"),
    ("missing-data", 'experiment t {\n model = "builtin:tiny-llama"\n}', "missing", 1, "no `data"),
    ("missing-source", 'experiment t {\n model = "builtin:tiny-llama"\n data { limit = 2 }\n}', "missing", 3,
     "`data` needs `source"),
    ("unknown-source", 'experiment t {\n model = "builtin:tiny-llama"\n data { source = json("data.jsonl") }\n}',
     "unknown", 3, "unknown data source `json`"),
    ("source-needs-path", 'experiment t {\n model = "builtin:tiny-llama"\n data { source = jsonl(field = "t") }\n}',
     "missing", 3, "needs a path"),
    ("text-takes-no-field",
     'experiment t {\n model = "builtin:tiny-llama"\n data { source = text("data.jsonl", field = "t") }\n}',
     "unknown", 3, "unknown `text` argument `field`"),
    ("source-not-call", 'experiment t {\n model = "builtin:tiny-llama"\n data { source = "data.jsonl" }\n}',
     "type", 3, "`source` must be"),
    ("limit-string", 'experiment t {\n model = "builtin:tiny-llama"\n data { source = jsonl("data.jsonl") limit = "8" }\n}',
     "type", 3, "`limit` must be an integer"),
    ("batch-size-zero", 'experiment t {\n model = "builtin:tiny-llama"\n data { source = jsonl("data.jsonl") batch_size = 0 }\n}',
     "range", 3, "`batch_size` must be >= 1"),
    ("huge-number", 'experiment t {\n model = "builtin:tiny-llama"\n data { source = jsonl("data.jsonl") limit = 99999999999999999999 }\n}',
     "range", 3, "`limit` must be <= "),
]


@pytest.mark.parametrize("case", SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_settings_check(diagnose, case):
    _, text, code, line, message = case
    diags = diagnose(text)
    assert [(d.code, d.span.line) for d in diags] == [(code, line)], diags
    assert message in diags[0].message


# model-shape checks: tiny-llama has 4 layers, 4 attention heads, 2 KV heads, 512 positions
MODEL_CASES = [
    ("trunk-not-below-layers", "hydra { trunk = 4 heads = 2 }", 7, "leaves no layers for the heads"),
    ("layer-out-of-range", "capture resid_out[4]", 7, "layer 4 is out of range"),
    ("negative-layer-out-of-range", "importance l2_norm at mlp.down_proj[-5]", 7, "layer -5 is out of range"),
    ("empty-slice", "capture resid_out[3:1]", 7, "selects no layer"),
    ("heads-reach-only-trunk", "hydra { trunk = 2 heads = 2 }\ncapture resid_out[0, 1] of heads[0]", 8,
     "sit in the shared trunk"),
    ("max-length-beyond-positions", "", 5, "exceeds the model's 512 positions"),
]


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_check(diagnose, case):
    _, body, line, message = case
    text = spec_with(body)
    if not body:
        text = text.replace("batch_size = 2", "batch_size = 2 max_length = 4096")
    diags = diagnose(text)
    assert [d.span.line for d in diags] == [line], diags
    assert message in diags[0].message
    assert diagnose(text, check_model=False) == ()  # none of these is visible without the model


def test_module_missing_in_architecture(diagnose):
    text = spec_with("importance channel_contribution at mlp.gate_proj[*]").replace("tiny-llama", "tiny-bert")
    (d,) = diagnose(text)
    assert d.code == "module" and "bert models have no `mlp.gate_proj`" in d.message


def test_data_file_missing_only_with_model_checks(diagnose):
    text = spec_with("").replace("data.jsonl", "absent.jsonl")
    (d,) = diagnose(text)
    assert d.code == "data" and d.span.line == 4 and "absent.jsonl" in d.message
    assert diagnose(text, check_model=False) == ()


def test_shard_size_is_a_size_string_and_a_bad_one_names_its_line(tmp_path):
    """`output { shard_size }`: decimal units to bytes; a bad size is a diagnostic at its line."""
    from expc.spec import load
    from expc.spec.diagnostics import DiagnosticError
    from expc.spec.vocabulary import DEFAULT_SHARD_SIZE

    data = tmp_path / "d.txt"
    data.write_text("hello\n")

    def spec(output: str) -> Path:
        path = tmp_path / "s.exp"
        path.write_text(f'experiment e {{\n  model = "builtin:tiny-llama"\n'
                        f'  data {{ source = text("{data}") }}\n  capture resid_out[0]\n'
                        f'  output {{ {output} }}\n}}\n')
        return path

    assert load(spec('dir = "x"')).output.shard_size == DEFAULT_SHARD_SIZE == 2 * 10**9
    assert load(spec('shard_size = "1.5MB"')).output.shard_size == 1_500_000
    assert load(spec('shard_size = "4096 B"')).output.shard_size == 4096
    for bad in ('"2 parsecs"', '"GB"', '"0B"', "12"):
        with pytest.raises(DiagnosticError) as caught:
            load(spec(f"shard_size = {bad}"))
        where = caught.value.diagnostics[0]
        assert "shard_size" in where.message and where.span.line == 5, where
