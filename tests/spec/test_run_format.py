"""The run-folder contract (spec/run_format.py): key builders and the parser are each other's
inverse, and the parser, module keys and key families read the contract's keys (§3)."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from expc.spec.run_format import (SUFFIXES, capture_key, effect_key, importance_key,
                                  intervention_key, key_family, meta_key,
                                  module_key, parse_key, split_head_prefix, split_suffix)
from expc.spec.vocabulary import METRICS, SITES

IDENTIFIER = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
# Without a layer, a capture's name must not end in `_{digits}`: contracts §3 spells a layer
# the same way, so the parser would read one from it.
NAMES = st.one_of(st.sampled_from(SITES), IDENTIFIER)
LAYERS = st.integers(min_value=0, max_value=200)
HEADS = st.none() | st.integers(min_value=0, max_value=64)
ROLES = st.sampled_from(("mlp.down_proj", "mlp.gate_proj", "self_attn.o_proj",
                         "input_layernorm", "post_attention_layernorm"))


@given(name=NAMES, layer=st.none() | LAYERS, head=HEADS,
       suffix=st.sampled_from(("", *SUFFIXES)))
def test_capture_keys_parse_back(name, layer, head, suffix):
    assume(layer is not None or re.fullmatch(r".+_\d+", name) is None)
    info = parse_key(capture_key(name, layer, head) + suffix)
    assert (info.kind, info.name, info.layer, info.head) == ("capture", name, layer, head)
    assert info.suffix == (suffix[1:] or None)
    assert split_suffix(info.key) == (capture_key(name, layer, head), suffix)


@given(metric=st.sampled_from(sorted(METRICS)), role=ROLES, layer=LAYERS, head=HEADS,
       field=IDENTIFIER)
def test_importance_keys_parse_back(metric, role, layer, head, field):
    path = f"layers.{layer}.{role}" if head is None else f"heads.{head}.layers.{layer}.{role}"
    info = parse_key(importance_key(metric, path, field))
    assert (info.kind, info.name, info.layer, info.field) == ("importance", metric, layer, field)
    assert split_head_prefix(path) == (info.head, info.module)
    assert info.instance == module_key(path) and info.role == role
    assert info.key == importance_key(metric, path) + "/" + field


@given(target=st.one_of(st.sampled_from(SITES), ROLES), layer=LAYERS, head=HEADS)
def test_intervention_keys_parse_back(target, layer, head):
    info = parse_key(intervention_key(target, layer, head, "channels"))
    assert (info.kind, info.name, info.layer, info.head, info.field) == (
        "intervention", target, layer, head, "channels")


@given(name=IDENTIFIER, head=HEADS)
def test_effect_keys_parse_back(name, head):
    info = parse_key(effect_key(name, head))
    assert (info.kind, info.name, info.head) == ("effect", name, head)


@given(name=IDENTIFIER)
def test_meta_keys_parse_back(name):
    info = parse_key(meta_key(name))
    assert (info.kind, info.name, info.layer, info.head) == ("meta", name, None, None)


def test_parse_capture_importance_and_meta_keys():
    info = parse_key("capture/head1/resid_last_3")
    assert (info.kind, info.name, info.layer, info.head, info.suffix) == (
        "capture", "resid_last", 3, 1, None)
    mask = parse_key("capture/attn_out_1.mask")
    assert (mask.name, mask.layer, mask.head, mask.suffix) == ("attn_out", 1, None, "mask")
    assert parse_key("capture/mlp_out_0.var").suffix == "var"
    final = parse_key("capture/head2/final_norm")
    assert (final.name, final.layer, final.head) == ("final_norm", None, 2)
    imp = parse_key("importance/channel_contribution/head1/layers.3.mlp.down_proj/weight_norm")
    assert (imp.kind, imp.name, imp.module, imp.head, imp.layer, imp.field, imp.role) == (
        "importance", "channel_contribution", "layers.3.mlp.down_proj", 1, 3, "weight_norm",
        "mlp.down_proj")
    assert imp.instance == "head1/layers.3.mlp.down_proj"
    assert parse_key("meta/token_count").kind == "meta"
    assert parse_key("weird").kind == "other"


def test_keys_are_spelled_as_the_contract_says():
    assert capture_key("resid_out", 3) == "capture/resid_out_3"
    assert capture_key("resid_out", 3, 1) == "capture/head1/resid_out_3"
    assert capture_key("embed") == "capture/embed"
    assert capture_key("logits", head=0) == "capture/head0/logits"
    assert importance_key("l2_norm", "heads.1.layers.3.mlp.down_proj", "score") == (
        "importance/l2_norm/head1/layers.3.mlp.down_proj/score")
    assert importance_key("l2_norm", "layers.3.mlp.down_proj") == (
        "importance/l2_norm/layers.3.mlp.down_proj")
    assert meta_key("sample_index") == "meta/sample_index"


def test_module_keys_for_results():
    assert module_key("heads.1.layers.3.mlp.down_proj") == "head1/layers.3.mlp.down_proj"
    assert module_key("layers.0.mlp.down_proj") == "layers.0.mlp.down_proj"
    assert split_head_prefix("heads.12.layers.3.mlp") == (12, "layers.3.mlp")
    assert split_head_prefix("norm") == (None, "norm")


@pytest.mark.parametrize("key, family", [
    ("capture/attn_out_12.mask", "capture/attn_out_{L}.mask"),
    ("importance/l2_norm/head2/layers.3.mlp.down_proj/score",
     "importance/l2_norm/head{h}/layers.{L}.mlp.down_proj/score"),
    ("capture/head0/logits", "capture/head{h}/logits"),
    ("capture/embed", "capture/embed"),
])
def test_key_family_generalises_layers_and_heads(key, family):
    assert key_family(key) == family
