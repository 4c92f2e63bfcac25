"""Model shapes from config.json: built-ins, local folders, and every way they fail."""

from __future__ import annotations

import json

import pytest

from expc.spec.builtin_models import BUILTIN_CONFIGS
from expc.spec.diagnostics import DiagnosticError, Span
from expc.spec.model_shape import ARCHITECTURES, read_model_shape
from tests.spec.conftest import spec_with

SPAN = Span(path="spec.exp", line=2, col=13, end_col=30)


@pytest.mark.parametrize("name", sorted(BUILTIN_CONFIGS))
def test_builtin_shapes_follow_their_configs(name):
    cfg = BUILTIN_CONFIGS[name]
    shape = read_model_shape(f"builtin:{name}", span=SPAN)
    assert shape.n_layers == cfg["num_hidden_layers"]
    assert shape.hidden == cfg["hidden_size"]
    assert shape.n_kv_heads == cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    assert shape.head_dim == cfg["hidden_size"] // cfg["num_attention_heads"]
    facts = ARCHITECTURES[cfg["model_type"]]
    assert set(shape.modules) == set(facts.linear_modules + facts.norm_modules)


def test_bert_has_no_gate_and_no_pre_attention_norm():
    shape = read_model_shape("builtin:tiny-bert", span=SPAN)
    assert "mlp.gate_proj" not in shape.modules and "input_layernorm" not in shape.modules
    assert {"mlp.up_proj", "mlp.down_proj", "self_attn.o_proj", "post_feedforward_layernorm"} <= set(shape.modules)


def test_local_checkpoint_config(tmp_path):
    cfg = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 3,
           "hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 2,
           "intermediate_size": 96, "vocab_size": 100, "head_dim": 16}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shape = read_model_shape(str(tmp_path), span=SPAN)
    assert (shape.architecture, shape.n_layers, shape.head_dim, shape.n_kv_heads) == ("Qwen2ForCausalLM", 3, 16, 2)


def _fails(model: str) -> str:
    with pytest.raises(DiagnosticError) as info:
        read_model_shape(model, span=SPAN)
    (d,) = info.value.diagnostics
    assert d.span == SPAN  # at the spec's `model = ...` value
    return d.message


def test_missing_folder(tmp_path):
    assert "does not exist" in _fails(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    assert "has no config.json" in _fails(str(tmp_path))


@pytest.mark.parametrize(("text", "message", "line", "col"), [
    ('{"model_type": "llama",\n  not json', "is not valid JSON", 2, 3),
    ("[1, 2]", "must hold a JSON object, found list", 1, 1),
])
def test_malformed_config_is_reported_where_it_breaks(tmp_path, text, message, line, col):
    # Not at the spec's `model = ...`: the fix is in config.json, at this line and column.
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(DiagnosticError) as info:
        read_model_shape(str(tmp_path), span=SPAN)
    (d,) = info.value.diagnostics
    assert message in d.message and d.code == "model"
    assert (d.span.path, d.span.line, d.span.col) == (str(tmp_path / "config.json"), line, col)


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "rwkv"}))
    assert "unsupported model_type `rwkv`" in _fails(str(tmp_path))


def test_config_lacking_a_size(tmp_path):
    # In config.json, not at the spec's `model = ...`: the fix is in that file (issue 12).
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8,
                                                      "num_attention_heads": 2}))
    with pytest.raises(DiagnosticError) as info:
        read_model_shape(str(tmp_path), span=SPAN)
    (d,) = info.value.diagnostics
    assert "config is missing `num_hidden_layers`" in d.message
    assert d.span.path == str(tmp_path / "config.json")


def test_unknown_builtin_suggests():
    with pytest.raises(DiagnosticError) as info:
        read_model_shape("builtin:tiny-lama", span=SPAN)
    assert info.value.diagnostics[0].help == ("did you mean `builtin:tiny-llama`?",)


def test_missing_model_folder_is_reported_on_the_model_line(diagnose):
    (d,) = diagnose(spec_with("").replace('"builtin:tiny-llama"', '"checkpoints/absent"'))
    assert (d.code, d.span.line, d.span.col) == ("model", 2, 13)
    assert "checkpoints/absent" in d.message


def test_config_is_read_never_the_weights(tmp_path, diagnose):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BUILTIN_CONFIGS["tiny-llama"]))
    (folder / "model.safetensors").write_bytes(b"\x00garbage that is not a checkpoint")
    assert diagnose(spec_with("capture resid_out[-1]").replace("builtin:tiny-llama", "ckpt")) == ()
