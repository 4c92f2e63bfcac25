"""Our models loaded from `save_pretrained` folders match Hugging Face layer by layer."""

import pytest
import torch
from hf_reference import FAMILIES, VOCAB, hf_layer_outputs, hf_model, our_layer_outputs, save

from expc.models.loading import load_model

ATOL = 1e-5


def _ids(batch: int = 2, length: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_and_every_layer_match_hugging_face(family, tmp_path):
    hf = hf_model(family)
    ours = load_model(save(hf, tmp_path))
    ids = _ids()
    hf_logits, hf_hidden = hf_layer_outputs(hf, ids)
    logits, hidden = our_layer_outputs(ours, ids)
    assert logits.shape == (1, *hf_logits.shape)
    assert len(hidden) == len(hf_hidden) == hf.config.num_hidden_layers + 1
    for layer, (mine, theirs) in enumerate(zip(hidden, hf_hidden)):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0, msg=f"{family} layer {layer}")
    torch.testing.assert_close(logits[0], hf_logits, atol=ATOL, rtol=0)


def test_flat_rope_theta_layout_loads_the_same_model(tmp_path):
    hf = hf_model("llama", rope_parameters={"rope_type": "default", "rope_theta": 123.0})
    ours = load_model(save(hf, tmp_path, flat_rope=True))
    assert ours.config.rope.theta == 123.0
    ids = _ids()
    torch.testing.assert_close(ours(ids)[0], hf_layer_outputs(hf, ids)[0], atol=ATOL, rtol=0)


def test_sliding_window_changes_the_output(tmp_path):
    """The Mistral window (4 < 10 tokens) is really applied: a wider window differs."""
    narrow = load_model(save(hf_model("mistral-window"), tmp_path / "narrow"))
    wide = load_model(save(hf_model("mistral-window", sliding_window=64), tmp_path / "wide"))
    ids = _ids()
    assert narrow.config.sliding_windows == (4, 4, 4)
    assert not torch.allclose(narrow(ids)[0, :, -1], wide(ids)[0, :, -1], atol=1e-3)


def test_tied_embeddings_share_one_tensor(tmp_path):
    ours = load_model(save(hf_model("llama-bias-tied-llama3"), tmp_path))
    assert ours.lm_head.weight is ours.embed_tokens.weight
