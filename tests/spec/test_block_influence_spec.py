"""`importance block_influence at layers[...]`: the statement of a metric of whole layers —
parsed, checked (a module role given, a module metric at `layers`, layers out of range),
formatted, and its result keys taken apart."""

from __future__ import annotations

import pytest

from expc.spec.formatter import format_text
from expc.spec.loader import load
from expc.spec.parser import parse
from expc.spec.run_format import importance_key, key_family, parse_key
from tests.spec.conftest import assert_single_diagnostic, spec_with

STATEMENT = "importance block_influence at layers[*]"


def test_the_statement_checks_and_names_whole_layers(diagnose, write):
    assert diagnose(spec_with(STATEMENT)) == ()
    (importance,) = load(write(spec_with(STATEMENT))).importances
    assert (importance.metric, importance.module, importance.params) == (
        "block_influence", "layers", ())
    assert importance.layers.resolve(4) == (0, 1, 2, 3)


def test_heads_and_layer_selectors_apply_as_for_modules(diagnose):
    body = "hydra { trunk = 1 heads = 3 }\nimportance block_influence at layers[1:] of heads[0, 2]"
    assert diagnose(spec_with(body)) == ()


@pytest.mark.parametrize("body, code, message, help_", [
    ("importance block_influence at mlp.down_proj[*]", "metric-module",
     "`block_influence` cannot be computed at `mlp.down_proj`", "at layers[...]"),
    ("importance block_influence at post_attention_layernorm[1]", "metric-module",
     "cannot be computed at `post_attention_layernorm`", "whole layers"),
    ("importance l2_norm at layers[*]", "metric-module", "`l2_norm` cannot be computed at `layers`",
     "linear or norm module"),
    ("importance channel_contribution at layers[0]", "metric-module", "cannot be computed at `layers`",
     "linear module"),
    ("importance block_influence at layers", "selector", "which layers", "layers[*]"),
    ("importance block_influence at layers[4]", "range", "layer 4 is out of range", None),
    ("importance block_influence at layers[-5]", "range", "layer -5 is out of range", None),
    ("importance block_influence at layers[*] { iterations = 2 }", "unknown",
     "`block_influence` takes no parameters", None),
    ("importance block_influence at layer[*]", "unknown", "unknown module `layer`", "`layers`"),
    ("importance block_influence at layers[0:2]\nimportance block_influence at layers[1]",
     "duplicate", "already computed", None),
])
def test_bad_statements_are_one_diagnostic(diagnose, body, code, message, help_):
    line = 7 + body.count("\n")
    assert_single_diagnostic(diagnose(spec_with(body)), code, line, message, help_)


def test_lowest_by_block_influence_selects_no_module_channels(diagnose):
    body = ('hydra { trunk = 1 heads = 2 }\nintervene mlp.down_proj[2] of heads[1] '
            '{ set = zero, channels = lowest(run = "runs/s", metric = block_influence, '
            'fraction = 0.5) }')
    assert_single_diagnostic(diagnose(spec_with(body), check_model=False), "metric-module", 8,
                             "`block_influence` does not score `mlp.down_proj`", "whole layers")


def test_fmt_round_trip_keeps_the_statement():
    text = ("experiment t {\n  importance   block_influence at layers[ 0 , 2:4 ] of heads[1]\n"
            "  importance l2_norm at mlp.down_proj[*]\n}\n")
    formatted = format_text(text)
    assert "    importance block_influence at layers[0, 2:4] of heads[1]\n" in formatted
    assert format_text(formatted) == formatted
    assert parse(formatted) == parse(text)


@pytest.mark.parametrize("path, key, layer, head", [
    ("layers.3", "importance/block_influence/layers.3/score", 3, None),
    ("heads.1.layers.12", "importance/block_influence/head1/layers.12/score", 12, 1),
])
def test_layer_keys_are_built_and_taken_apart(path, key, layer, head):
    assert importance_key("block_influence", path, "score") == key
    info = parse_key(key)
    assert (info.kind, info.name, info.layer, info.head, info.field, info.role) == (
        "importance", "block_influence", layer, head, "score", "layers")
    assert info.instance == key.removeprefix("importance/block_influence/").removesuffix("/score")
    assert key_family(key).endswith("layers.{L}/score")
    # module keys keep their role and layer as before
    module = parse_key("importance/l2_norm/head1/layers.3.mlp.down_proj/score")
    assert (module.layer, module.role) == (3, "mlp.down_proj")
