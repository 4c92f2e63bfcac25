"""Padding invariance: a left- or right-padded batch gives each sample's numbers alone."""

import pytest
import torch
from hf_reference import VOCAB, hf_model, our_layer_outputs, save

from expc.models.loading import load_model
from expc.spec import ir

ATOL = 1e-5
LENGTHS = (7, 4, 9)


@pytest.fixture(scope="module", params=["llama", "mistral-window", "olmo2"])
def model(request, tmp_path_factory):
    folder = save(hf_model(request.param), tmp_path_factory.mktemp(request.param))
    return load_model(folder, hydra=ir.Hydra(trunk=1, heads=2))


def _samples(seed=5):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (n,), generator=generator) for n in LENGTHS]


def _pad(samples, side):
    width = max(len(s) for s in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sample in enumerate(samples):
        span = slice(width - len(sample), width) if side == "left" else slice(0, len(sample))
        ids[row, span], mask[row, span] = sample, 1
    return ids, mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sample_alone(model, side):
    samples = _samples()
    ids, mask = _pad(samples, side)
    for head in (0, 1):
        logits, hidden = our_layer_outputs(model, ids, mask, head=head)
        assert torch.isfinite(logits).all() and all(torch.isfinite(h).all() for h in hidden)
        for row, sample in enumerate(samples):
            real = mask[row].bool()
            alone_logits, alone_hidden = our_layer_outputs(model, sample[None], head=head)
            torch.testing.assert_close(logits[0, row, real], alone_logits[0, 0], atol=ATOL, rtol=0)
            for layer, (batched, alone) in enumerate(zip(hidden, alone_hidden)):
                torch.testing.assert_close(batched[row, real], alone[0], atol=ATOL, rtol=0,
                                           msg=f"{side} padding, layer {layer}, sample {row}")
