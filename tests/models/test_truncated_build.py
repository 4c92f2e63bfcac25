"""A model built with only the layers a plan reads (`n_layers_built`, from
`Plan.layers_needed`) captures bit for bit what the whole model does, and reads only those
layers' tensors (issue 17). The other architectures check the same in `arch_parity`'s
`assert_sites_match` (Gemma 2 and 3, Phi-3 and GPT-2 with their fused checkpoints, Qwen3)."""

from __future__ import annotations

import pytest
import torch
from arch_parity import assert_truncated_build_equal
from hf_reference import FAMILIES, VOCAB, hf_model, save

from expc.models.checkpoint import Checkpoint
from expc.models.hydra import HydraTransformer
from expc.models.loading import load_model, read_model_config
from expc.spec import ir


def _ids() -> torch.Tensor:
    return torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("hydra", [None, ir.Hydra(trunk=1, heads=2)])
def test_hugging_face_families(family, hydra, tmp_path):
    assert_truncated_build_equal(save(hf_model(family), tmp_path), hydra=hydra, ids=_ids())


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-olmo2", "tiny-bert"])
@pytest.mark.parametrize("hydra", [None, ir.Hydra(trunk=0, heads=2), ir.Hydra(trunk=2, heads=3)])
def test_builtin_models(name, hydra):
    assert_truncated_build_equal(f"builtin:{name}", hydra=hydra, ids=_ids(), last=2)


def test_only_the_built_layers_tensors_are_read(tmp_path, monkeypatch):
    folder = save(hf_model("llama"), tmp_path, max_shard_size="20KB")
    read = []
    original = Checkpoint.get_tensor
    monkeypatch.setattr(Checkpoint, "get_tensor",
                        lambda self, name, **kw: read.append(name) or original(self, name, **kw))
    load_model(folder, n_layers_built=1)
    assert read and all(name.startswith(("model.embed_tokens.", "model.layers.0."))
                        for name in read)
    read.clear()
    load_model(folder)
    assert {"lm_head.weight", "model.norm.weight"} <= set(read)
    assert any(name.startswith("model.layers.2.") for name in read)


def test_read_model_config_reads_config_json_alone(tmp_path):
    folder = save(hf_model("llama"), tmp_path)
    (folder / "model.safetensors").unlink()  # the weights are not looked at
    assert read_model_config(folder).n_layers == 3
    assert read_model_config("builtin:tiny-bert").n_layers == 4


def test_the_built_layer_count_is_checked():
    config = read_model_config("builtin:tiny-llama")
    with pytest.raises(ValueError, match="cannot build 5 of a 4-layer"):
        HydraTransformer.build(config, n_layers_built=5)
    whole = HydraTransformer.build(config, n_layers_built=4)
    assert not whole.truncated and whole.lm_head is not None
    embeddings_only = HydraTransformer.build(config, n_layers_built=0)
    assert embeddings_only.truncated and not embeddings_only.layers
