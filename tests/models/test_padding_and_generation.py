"""Padding invariance (left and right) and KV-cache generation against full recomputation."""

import pytest
import torch
from hf_reference import VOCAB, hf_model, our_layer_outputs, save

from expc.models.loading import load_model

ATOL = 1e-5
LENGTHS = (7, 4, 9)


@pytest.fixture(scope="module", params=["llama", "mistral-window", "olmo2"])
def model(request, tmp_path_factory):
    folder = save(hf_model(request.param), tmp_path_factory.mktemp(request.param))
    return load_model(folder, trunk=1, heads=2)


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


@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_generation_equals_full_recomputation(model, side):
    ids, mask = _pad(_samples(seed=6), side)
    cached = model.generate(ids, mask, max_new_tokens=5)
    recomputed = model.generate(ids, mask, max_new_tokens=5, use_cache=False)
    assert cached.shape == (3, ids.shape[1] + 5)
    torch.testing.assert_close(cached, recomputed, atol=0, rtol=0)
    assert model.kv_cache is None


def test_cached_step_logits_equal_the_full_forward(model):
    ids, mask = _pad(_samples(seed=8), "left")
    full = model(ids, mask)  # [n, B, S, V]
    model.init_kv_cache(ids.shape[0], ids.shape[1])
    try:
        prefix = model(ids[:, :5], mask[:, :5])
        steps = [model(ids[:, t:t + 1], mask[:, t:t + 1]) for t in range(5, ids.shape[1])]
    finally:
        model.reset_kv_cache()
    real = mask.bool()
    stepped = torch.cat([prefix, *steps], dim=2)
    torch.testing.assert_close(stepped[:, real], full[:, real], atol=ATOL, rtol=0)


def test_generation_from_mean_of_heads(model):
    """The next token is the argmax of the heads' mean logits, not of any single head."""
    head_layer = next(iter(model.heads[1].layers.values()))
    original = head_layer.mlp.down_proj.weight.clone()
    distinct_cases = 0
    try:
        for seed in range(4):
            noise = torch.randn(original.shape, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                head_layer.mlp.down_proj.weight.copy_(noise)
            for sample in _samples():
                logits = model(sample[None])[:, 0, -1]  # [n_heads, V]
                token = model.generate(sample[None], max_new_tokens=1)[0, -1]
                assert token == logits.mean(0).argmax()
                distinct_cases += bool((logits.argmax(-1) != token).all())
    finally:
        with torch.no_grad():
            head_layer.mlp.down_proj.weight.copy_(original)
    assert distinct_cases > 0, "no case separates the mean from every single head"


def test_cache_overflow_is_an_error(model):
    ids = _samples()[0][None]
    model.init_kv_cache(1, 4)
    try:
        with pytest.raises(ValueError, match="KV cache holds 4"):
            model(ids)
    finally:
        model.reset_kv_cache()
