"""config.json values of the wrong type or range are diagnostics at the file and the key's
line — for `expc check`'s model shape and for every architecture's config (issue 12, item 7)."""

from __future__ import annotations

import json

import pytest

from expc.cli import main
from expc.models.registry import read_config
from expc.spec.builtin_models import BUILTIN_CONFIGS
from expc.spec.diagnostics import DiagnosticError, Span
from expc.spec.model_shape import read_model_shape

LLAMA = dict(BUILTIN_CONFIGS["tiny-llama"])
BERT = dict(BUILTIN_CONFIGS["tiny-bert"])

BAD_FIELDS = [  # (base config, key, value, message fragment)
    (LLAMA, "model_type", ["llama"], "`model_type` must be a non-empty string"),
    (LLAMA, "rope_theta", "10000", "`rope_theta` must be a finite number"),
    (LLAMA, "rope_theta", -1.0, "`rope_theta` must be a finite number greater than 0"),
    (LLAMA, "pad_token_id", 259, "`pad_token_id` must be a token id in 0..258"),
    (LLAMA, "pad_token_id", -1, "`pad_token_id` must be a token id"),
    (LLAMA, "hidden_size", "64", "`hidden_size` must be a positive integer, found the string"),
    (LLAMA, "num_hidden_layers", -4, "`num_hidden_layers` must be a positive integer"),
    (LLAMA, "num_hidden_layers", 2**40, "`num_hidden_layers` must be a positive integer"),
    (LLAMA, "num_attention_heads", True, "`num_attention_heads` must be a positive integer"),
    (LLAMA, "num_key_value_heads", 3, "must divide `num_attention_heads`"),
    (LLAMA, "head_dim", 0, "`head_dim` must be a positive integer"),
    (LLAMA, "rms_norm_eps", "1e-6", "`rms_norm_eps` must be a finite number"),
    (LLAMA, "tie_word_embeddings", "no", "`tie_word_embeddings` must be `true` or `false`"),
    (LLAMA, "architectures", "LlamaForCausalLM", "`architectures` must be a list of strings"),
    (LLAMA, "rope_scaling", [2.0], "`rope_scaling` must be an object"),
    (LLAMA, "rope_scaling", {"rope_type": "linear", "factor": "2"},
     "`rope_scaling.factor` must be a finite number"),
    (LLAMA, "hidden_act", {"name": "silu"}, "`hidden_act` must be a non-empty string"),
    (LLAMA, "max_position_embeddings", 1.5, "`max_position_embeddings` must be a positive"),
    (BERT, "type_vocab_size", "2", "`type_vocab_size` must be a positive integer"),
    (BERT, "layer_norm_eps", float("nan"), "`layer_norm_eps` must be a finite number"),
]


def _write(tmp_path, config: dict) -> str:
    text = json.dumps(config, indent=2)  # one key per line
    (tmp_path / "config.json").write_text(text)
    return text


def _only(excinfo) -> object:
    (diagnostic,) = excinfo.value.diagnostics
    return diagnostic


@pytest.mark.parametrize(("base", "key", "value", "message"), BAD_FIELDS,
                         ids=[f"{c[1]}={c[2]!r}"[:40] for c in BAD_FIELDS])
def test_bad_field_is_a_diagnostic_at_its_line(tmp_path, base, key, value, message):
    text = _write(tmp_path, {**base, key: value})
    source = str(tmp_path / "config.json")
    named = "factor" if key == "rope_scaling" and isinstance(value, dict) else key
    line = next(n for n, row in enumerate(text.splitlines(), 1)
                if row.lstrip().startswith(f'"{named}"'))
    with pytest.raises(DiagnosticError) as excinfo:
        read_config({**base, key: value}, source=source)
    diagnostic = _only(excinfo)
    assert message in diagnostic.message and diagnostic.span.path == source
    assert diagnostic.span.line == line


@pytest.mark.parametrize(("base", "key", "value", "message"),
                         [c for c in BAD_FIELDS if c[1] not in (
                             "rope_theta", "pad_token_id", "rms_norm_eps", "rope_scaling",
                             "hidden_act", "type_vocab_size", "layer_norm_eps")],
                         ids=lambda v: str(v)[:20])
def test_check_reads_the_shape_through_the_same_reader(tmp_path, base, key, value, message):
    _write(tmp_path, {**base, key: value})
    with pytest.raises(DiagnosticError) as excinfo:
        read_model_shape(str(tmp_path), span=Span(path="spec.exp", line=2))
    assert message in _only(excinfo).message


def test_builtin_and_null_values_still_read():
    assert read_config(LLAMA).pad_token_id == 256
    assert read_config({**LLAMA, "pad_token_id": None, "eos_token_id": [258, 1]}).eos_token_id == 258
    mistral = read_config({**LLAMA, "model_type": "mistral", "sliding_window": None})
    assert mistral.sliding_windows == (None,) * 4  # null: no sliding window
    assert read_config({**LLAMA, "model_type": "mistral"}).sliding_windows == (4096,) * 4


@pytest.mark.parametrize("command", ["check", "run"])
def test_cli_exits_1_naming_config_json(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(
        json.dumps({"model_type": ["llama"], **{k: v for k, v in LLAMA.items()
                                                if k != "model_type"}}, indent=1))
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "s.exp").write_text('experiment s {\n  model = "m"\n'
                                    '  data { source = jsonl("d.jsonl") }\n}\n')
    with pytest.raises(SystemExit) as info:
        main([command, "s.exp", *(["--out", "out"] if command == "run" else [])])
    err = capsys.readouterr().err
    assert info.value.code == 1, err
    assert "m/config.json:2:1: error: `model_type` must be a non-empty string" in err
