"""`block_influence` end to end against Hugging Face: `expc run` on a tiny random Llama and
BERT, padded batches, against 1 - mean cosine written out in float64 from transformers'
`output_hidden_states`, sample by sample without padding; with a Hydra split, per-head keys,
and a head with an intervention against the HF model with the same edit as a hook.

`hidden_states[L]` is layer L's input and `hidden_states[L + 1]` its output, except that
transformers' decoders put the final norm on the last entry: a decoder's last layer output is
taken with a forward hook on that layer instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import transformers

import expc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from hf_reference import hf_model  # noqa: E402
from intervene_runs import spec  # noqa: E402
from test_bert import randomize, tiny_config  # noqa: E402

ATOL = 2e-6


def _samples(vocab: int, count: int = 7) -> list[list[int]]:
    generator = torch.Generator().manual_seed(11)
    lengths = torch.randint(2, 15, (count,), generator=generator)
    return [torch.randint(1, vocab, (int(n),), generator=generator).tolist() for n in lengths]


def _write_checkpoint(folder: Path, hf: transformers.PreTrainedModel) -> tuple[Path, list]:
    hf.save_pretrained(folder / "ckpt")
    samples = _samples(hf.config.vocab_size)
    (folder / "data.jsonl").write_text("".join(json.dumps({"input_ids": s}) + "\n"
                                               for s in samples))
    return folder, samples


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    hf = hf_model("llama")  # 3 layers, scrambled weights
    return (hf, *_write_checkpoint(tmp_path_factory.mktemp("bi-llama"), hf))


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    hf = randomize(transformers.BertModel(tiny_config(), add_pooling_layer=False))
    return (hf, *_write_checkpoint(tmp_path_factory.mktemp("bi-bert"), hf))


def _run(folder: Path, body: str, name: str, *, hydra: str = "") -> dict[str, torch.Tensor]:
    return expc.run(spec(folder, name, data="data.jsonl", body=body, hydra=hydra))


def _layer_io(hf, ids: list[int], *, hook=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) `[S, H]` float64 of every layer for one unpadded sample."""
    model = hf.double()
    layers = model.model.layers if hasattr(model, "model") else model.encoder.layer
    last: list[torch.Tensor] = []
    handles = [layers[-1].register_forward_hook(
        lambda _m, _a, out: last.append(out[0] if isinstance(out, tuple) else out))]
    if hook is not None:
        handles.append(hook(model))
    try:
        with torch.no_grad():
            states = list(model(input_ids=torch.tensor([ids]), output_hidden_states=True)
                          .hidden_states)
    finally:
        for handle in handles:
            handle.remove()
        hf.float()
    if hasattr(model, "model"):  # a decoder: its last hidden state has the final norm on it
        states[-1] = last[0]
    return [(states[L][0], states[L + 1][0]) for L in range(len(layers))]


def reference_scores(hf, samples, *, hook=None) -> list[float]:
    """Per layer, 1 - the mean over every token of every sample of cos(input, output)."""
    cosines: list[list[torch.Tensor]] = [[] for _ in range(hf.config.num_hidden_layers)]
    for ids in samples:
        for layer, (x, y) in enumerate(_layer_io(hf, ids, hook=hook)):
            cosines[layer].append((x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)))
    return [1 - float(torch.cat(c).mean()) for c in cosines]


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_scores_match_hidden_states_of_transformers(family, request):
    hf, folder, samples = request.getfixturevalue(family)
    results = _run(folder, "importance block_influence at layers[*]", f"plain_{family}")
    expected = reference_scores(hf, samples)
    for layer, value in enumerate(expected):
        score = results[f"importance/block_influence/layers.{layer}/score"]
        assert score.shape == () and score.dtype == torch.float32
        assert abs(float(score) - value) < ATOL, (layer, float(score), value)
    assert len(set(expected)) == len(expected)  # distinct layers, so no key can be swapped


def _zero_mlp(layer: int):
    def hook(model):
        return model.model.layers[layer].mlp.register_forward_hook(
            lambda _m, _a, out: torch.zeros_like(out))
    return hook


def test_hydra_run_writes_per_head_keys_and_reads_each_head_s_values(llama):
    hf, folder, samples = llama
    results = _run(folder, """
    importance block_influence at layers[*]
    intervene mlp_out[2] of heads[1] { set = zero }
    """, "hydra", hydra="hydra { trunk = 1  heads = 2 }")
    keys = sorted(k for k in results if k.startswith("importance/"))
    assert keys == [f"importance/block_influence/{where}/score" for where in (
        "head0/layers.1", "head0/layers.2", "head1/layers.1", "head1/layers.2", "layers.0")]
    plain, edited = reference_scores(hf, samples), reference_scores(
        hf, samples, hook=_zero_mlp(2))
    by_key = {k.split("/", 2)[2].removesuffix("/score"): float(v) for k, v in results.items()
              if k.startswith("importance/")}
    expected = {"layers.0": plain[0], "head0/layers.1": plain[1], "head0/layers.2": plain[2],
                "head1/layers.1": plain[1], "head1/layers.2": edited[2]}
    for where, value in expected.items():
        assert abs(by_key[where] - value) < ATOL, (where, by_key[where], value)
    assert abs(edited[2] - plain[2]) > 1e-3  # the intervention is visible in the score
