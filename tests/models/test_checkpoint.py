"""Checkpoint folders, good and broken: every failure is a diagnostic naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

from expc.models.checkpoint import INDEX_FILE, load_config, open_checkpoint
from expc.spec.diagnostics import DiagnosticError


def tiny_bert_config() -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=32,
    )


@pytest.fixture(scope="module")
def hf_model() -> transformers.BertModel:
    torch.manual_seed(0)
    return transformers.BertModel(tiny_bert_config()).eval()


@pytest.fixture()
def single(tmp_path: Path, hf_model) -> Path:
    hf_model.save_pretrained(tmp_path / "single")
    return tmp_path / "single"


@pytest.fixture()
def sharded(tmp_path: Path, hf_model) -> Path:
    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    return tmp_path / "sharded"


def diagnostic_of(excinfo: pytest.ExceptionInfo) -> object:
    (diag,) = excinfo.value.diagnostics
    return diag


def test_single_file_reads_every_tensor(single: Path, hf_model) -> None:
    ckpt = open_checkpoint(single)
    state = hf_model.state_dict()
    assert ckpt.config["model_type"] == "bert"
    assert ckpt.config["hidden_size"] == 32
    assert set(state) <= set(ckpt.keys())
    for name, value in state.items():
        assert ckpt.shape(name) == tuple(value.shape)
        assert torch.equal(ckpt.get_tensor(name), value)


def test_sharded_matches_single(single: Path, sharded: Path) -> None:
    index = json.loads((sharded / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 1, "the fixture must really be sharded"
    one, many = open_checkpoint(single), open_checkpoint(sharded)
    assert one.keys() == many.keys()
    for name in one.keys():
        assert torch.equal(one.get_tensor(name), many.get_tensor(name))
    assert many.listing == sharded / INDEX_FILE


def test_each_read_owns_its_memory(single: Path) -> None:
    ckpt = open_checkpoint(single)
    name = "encoder.layer.0.attention.self.query.weight"
    first, second = ckpt.get_tensor(name), ckpt.get_tensor(name)
    assert torch.equal(first, second)
    first.zero_()  # a Hydra head pruned in place must not change its sibling
    assert second.abs().sum() > 0
    assert torch.equal(second, open_checkpoint(single).get_tensor(name))


def test_dtype_cast_on_read(single: Path) -> None:
    ckpt = open_checkpoint(single)
    name = "embeddings.word_embeddings.weight"
    half = ckpt.get_tensor(name, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert torch.equal(half, ckpt.get_tensor(name).to(torch.bfloat16))


def test_load_config_needs_no_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert load_config(tmp_path) == {"model_type": "llama"}
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(tmp_path)
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-no-weights"
    assert diag.span.path == str(tmp_path)


def test_shards_without_their_index(sharded: Path) -> None:
    (sharded / INDEX_FILE).unlink()
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(sharded)
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-no-weights"
    assert "model-00001-of-" in diag.help[0] and INDEX_FILE in diag.help[0]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(tmp_path / "nope")
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-missing-folder"
    assert diag.span.path == str(tmp_path / "nope")


def test_missing_config(single: Path) -> None:
    (single / "config.json").unlink()
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(single)
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-missing-config"
    assert diag.span.path == str(single / "config.json")


def test_invalid_config_json_names_its_line(single: Path) -> None:
    (single / "config.json").write_text('{\n  "model_type": "bert",\n  "hidden_size": 32,,\n}\n')
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(single)
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-bad-json"
    assert diag.span.path == str(single / "config.json")
    assert diag.span.line == 3


def test_missing_shard_names_index_and_shard(sharded: Path) -> None:
    index = json.loads((sharded / INDEX_FILE).read_text())
    gone = sorted(set(index["weight_map"].values()))[-1]
    (sharded / gone).unlink()
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(sharded)
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-missing-shard"
    assert diag.span.path == str(sharded / INDEX_FILE)
    assert gone in diag.message
    lines = (sharded / INDEX_FILE).read_text().splitlines()
    assert gone in lines[diag.span.line - 1]


def test_index_names_tensor_the_shard_lacks(sharded: Path) -> None:
    index_path = sharded / INDEX_FILE
    index = json.loads(index_path.read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"]["encoder.layer.9.phantom.weight"] = shard
    index_path.write_text(json.dumps(index, indent=2))
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(sharded)
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-shard-lacks-tensor"
    assert diag.span.path == str(index_path)
    assert "encoder.layer.9.phantom.weight" in diag.message and shard in diag.message
    assert "phantom" in index_path.read_text().splitlines()[diag.span.line - 1]


def test_requested_tensor_missing_suggests_close_names(single: Path) -> None:
    ckpt = open_checkpoint(single)
    with pytest.raises(DiagnosticError) as excinfo:
        ckpt.get_tensor("embeddings.word_embedding.weight")
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-missing-tensor"
    assert diag.span.path == str(single / "model.safetensors")
    assert any("embeddings.word_embeddings.weight" in h for h in diag.help)


def test_shape_mismatch(sharded: Path) -> None:
    ckpt = open_checkpoint(sharded)
    name = "encoder.layer.1.output.dense.weight"
    ckpt.expect_shape(name, (32, 64))  # the right shape passes
    with pytest.raises(DiagnosticError) as excinfo:
        ckpt.expect_shape(name, (32, 128))
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-shape-mismatch"
    assert diag.span.path == str(ckpt.locations[name])
    assert "[32, 64]" in diag.message and "[32, 128]" in diag.message


def test_pickle_checkpoint_is_refused_without_loading(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    # Not a valid pickle: refusing must not depend on reading it.
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 not really a pickle")
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(tmp_path)
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-pickle-refused"
    assert diag.span.path == str(tmp_path / "pytorch_model.bin")
    assert "safetensors" in diag.message


def test_corrupt_safetensors_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(tmp_path)
    diag = diagnostic_of(excinfo)
    assert diag.code == "checkpoint-bad-safetensors"
    assert diag.span.path == str(tmp_path / "model.safetensors")


def test_config_must_be_an_object(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")
    save_file({"w": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(DiagnosticError) as excinfo:
        open_checkpoint(tmp_path)
    assert diagnostic_of(excinfo).code == "checkpoint-bad-json"
