"""`load_model` from folders: sharded checkpoints, dtype cast, and broken checkpoints."""

import json

import pytest
import torch
from hf_reference import VOCAB, hf_model, save
from safetensors.torch import load_file, save_file

from expc.models.loading import DTYPES, load_model
from expc.spec import ir, vocabulary
from expc.spec.diagnostics import DiagnosticError


@pytest.fixture(scope="module")
def hf():
    return hf_model("qwen2")


@pytest.fixture(scope="module")
def folder(hf, tmp_path_factory):
    return save(hf, tmp_path_factory.mktemp("single"))


def _ids():
    return torch.randint(1, VOCAB, (2, 8), generator=torch.Generator().manual_seed(4))


def test_sharded_checkpoint_loads_like_a_single_file(hf, folder, tmp_path):
    sharded = save(hf, tmp_path, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    ids = _ids()
    torch.testing.assert_close(load_model(sharded, hydra=ir.Hydra(trunk=1, heads=2))(ids),
                               load_model(folder, hydra=ir.Hydra(trunk=1, heads=2))(ids), atol=0, rtol=0)


def test_parameters_are_materialised_frozen_and_cast(folder):
    model = load_model(folder, dtype="bfloat16")
    params = list(model.parameters())
    assert all(p.dtype == torch.bfloat16 and not p.is_meta and not p.requires_grad for p in params)
    assert not model.training
    reference = load_model(folder)(_ids())
    torch.testing.assert_close(model(_ids()).float(), reference, atol=0.1, rtol=0.05)


def test_every_dtype_word_of_the_language_is_a_torch_dtype():
    assert tuple(DTYPES) == vocabulary.DTYPES
    assert all(isinstance(DTYPES[name], torch.dtype) for name in vocabulary.DTYPES)
    assert DTYPES["bfloat16"] is torch.bfloat16


def _copy_without(folder, tmp_path, key):
    tensors = load_file(folder / "model.safetensors")
    del tensors[key]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    return tmp_path


def test_missing_tensor_names_file_and_tensor(folder, tmp_path):
    broken = _copy_without(folder, tmp_path, "model.layers.1.self_attn.k_proj.bias")
    with pytest.raises(DiagnosticError) as excinfo:
        load_model(broken)
    (diagnostic,) = excinfo.value.diagnostics
    assert diagnostic.span.path.endswith("model.safetensors")
    assert "model.layers.1.self_attn.k_proj.bias" in diagnostic.message


def test_shape_mismatch_names_file_and_tensor(folder, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(DiagnosticError) as excinfo:
        load_model(tmp_path)
    (diagnostic,) = excinfo.value.diagnostics
    assert diagnostic.span.path.endswith("model.safetensors")
    assert "mlp.gate_proj.weight" in diagnostic.message and "[40, 32]" in diagnostic.message


def test_missing_folder_is_a_diagnostic(tmp_path):
    with pytest.raises(DiagnosticError, match="does not exist"):
        load_model(tmp_path / "nowhere")
