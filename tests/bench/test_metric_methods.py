"""The comparison's methods on a tiny random Llama: captures and importance metrics agree.

The metric formulas are written out here once more, token by token, on module inputs
recorded by wrapping the modules (not by hooks, which the method under test uses): the
forward-hooks row must equal them, expc's compiled model and `expc run` must equal the
hooks, and the harness must find every transformers-only row in agreement with its float64
reference — including the last layer, where transformers 5 would hand back the final norm's
output by default — while `output_hidden_states`, which sees no module input, is skipped
with its reason on a workload with metrics. TransformerLens and nnsight are not installed in
the project's environment; their rows run in the benchmark's (`python -m bench`).
"""

from __future__ import annotations

import pytest
import torch

import bench.expc_methods as expc_methods
import bench.workloads as workloads
from bench.expc_methods import EXPC_METHODS, contract_key
from bench.harness import run_workload
from bench.metric_formulas import CHANNEL_CONTRIBUTION, KV_HEAD_CONTRIBUTION
from bench.peers import PEERS
from bench.workloads import Workload, random_batches, word_texts
from tests.bench.tiny_llama import build_tiny_llama

VOCAB, N_KV_HEADS, N_LAYERS = 64, 2, 2
METRICS = (CHANNEL_CONTRIBUTION, KV_HEAD_CONTRIBUTION)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A 2-layer Llama (hidden 32, 4 heads, 2 KV heads) with the bench's word-level tokenizer."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), n_layers=N_LAYERS, vocab=VOCAB)


@pytest.fixture
def tiny_workload(tiny_llama, tmp_path, monkeypatch):
    """Two padded batches of 3 samples; the spec expc reads is written under `tmp_path`."""
    monkeypatch.setattr(workloads, "VOCAB_SIZE", VOCAB)
    monkeypatch.setattr(expc_methods, "CACHE_DIR", tmp_path)
    batches = random_batches(n_batches=2, batch_size=3, seq_len=8, seed=0)
    return Workload(name="tiny", description="tiny", checkpoint=tiny_llama, family="decoder",
                    n_layers=N_LAYERS, layers=tuple(range(N_LAYERS)), batches=batches,
                    texts=word_texts(batches), metrics=METRICS)


def method(name: str):
    return next(m for m in PEERS + EXPC_METHODS if m.name == name)


class Recorder(torch.nn.Module):
    """Wraps a module and keeps every input it is called with."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.inner(x)


def expected_scores(workload: Workload) -> dict[str, torch.Tensor]:
    """Both metrics at every layer, token by token over the real tokens, in float64."""
    model = workload.load_model()
    recorders = {}
    for layer, block in enumerate(model.model.layers):
        block.mlp.down_proj = recorders[CHANNEL_CONTRIBUTION, layer] = Recorder(block.mlp.down_proj)
        block.self_attn.o_proj = recorders[KV_HEAD_CONTRIBUTION, layer] = Recorder(block.self_attn.o_proj)
    with torch.no_grad():
        for batch in workload.batches:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    real = [(b, s, batch) for batch in workload.batches
            for b in range(batch.input_ids.shape[0]) for s in range(batch.input_ids.shape[1])
            if batch.attention_mask[b, s]]
    expected = {}
    for (metric, layer), recorder in recorders.items():
        weight = recorder.inner.weight.double()  # [O, D]
        inputs = {id(batch): x.double() for batch, x in zip(workload.batches, recorder.inputs)}
        if metric == CHANNEL_CONTRIBUTION:
            total = sum(inputs[id(batch)][b, s].abs() for b, s, batch in real)  # [D]
            column_norms = (weight ** 2).sum(dim=0).sqrt()  # [D]
            expected[f"{metric}/{layer}"] = column_norms * total / len(real)
        else:
            width = weight.shape[1] // N_KV_HEADS
            scores = []
            for k in range(N_KV_HEADS):
                cols = slice(k * width, (k + 1) * width)
                norms = [(weight[:, cols] @ inputs[id(batch)][b, s, cols]).pow(2).sum().sqrt()
                         for b, s, batch in real]
                scores.append(sum(norms) / len(real))
            expected[f"{metric}/{layer}"] = torch.stack(scores)  # [K]
    return expected


def test_forward_hooks_metrics_equal_the_formulas_token_by_token(tiny_workload):
    outputs = method("forward_hooks").build(tiny_workload)(tiny_workload.batches)
    expected = expected_scores(tiny_workload)
    assert sorted(key for key in outputs if not key.startswith("resid_out/")) == sorted(expected)
    for key, score in expected.items():
        torch.testing.assert_close(outputs[key].double(), score, rtol=1e-5, atol=1e-6)
    assert expected[f"{KV_HEAD_CONTRIBUTION}/0"].shape == (N_KV_HEADS,)
    # a second pass starts from zero: the same numbers, not twice them
    again = method("forward_hooks").build(tiny_workload)
    again(tiny_workload.batches)
    torch.testing.assert_close(again(tiny_workload.batches)[f"{CHANNEL_CONTRIBUTION}/1"],
                               outputs[f"{CHANNEL_CONTRIBUTION}/1"])


@pytest.mark.parametrize("expc_method", ["expc_compiled", "expc_run"])
def test_expc_rows_equal_the_hooks_key_by_key(tiny_workload, expc_method):
    hooks = method("forward_hooks").build(tiny_workload)(tiny_workload.batches)
    runner = method(expc_method).build(tiny_workload)
    runner(tiny_workload.batches)  # the second pass must start afresh
    outputs = runner(tiny_workload.batches)
    assert sorted(outputs) == sorted(hooks)
    for key in hooks:
        torch.testing.assert_close(outputs[key], hooks[key], rtol=1e-5, atol=1e-6)
    spec = (expc_methods.CACHE_DIR / "expc" / "tiny" / "bench.exp").read_text()
    assert "importance channel_contribution at mlp.down_proj[*]" in spec
    assert "importance kv_head_contribution at self_attn.o_proj[*] { optimize_for = memory }" in spec


def test_contract_keys_of_the_bench_outputs():
    assert contract_key("resid_out/3") == "capture/resid_out_3"
    assert contract_key("channel_contribution/3") == (
        "importance/channel_contribution/layers.3.mlp.down_proj/score")
    assert contract_key("kv_head_contribution/0") == (
        "importance/kv_head_contribution/layers.0.self_attn.o_proj/score")


def test_harness_agreement_with_the_float64_reference(tiny_workload):
    import attrs

    names = ("plain", "hidden_states", "forward_hooks", "expc_compiled")
    for workload, metrics_row in ((attrs.evolve(tiny_workload, metrics=()), False),
                                  (tiny_workload, True)):
        result = run_workload(workload, [method(name) for name in names], repetitions=2,
                              quick=True, measure_memory=False)
        by_name = {m.name: m for m in result.methods}
        assert by_name["plain"].status == "ok" and by_name["plain"].ratio_to_plain == 1.0
        assert by_name["plain"].max_abs_diff is None
        measured = ["forward_hooks", "expc_compiled"] + ([] if metrics_row else ["hidden_states"])
        for name in measured:
            assert by_name[name].status == "ok", by_name[name].note
            assert by_name[name].max_abs_diff < 1e-5
            assert len(by_name[name].repetition_seconds) == 2
            assert ("channel_contribution" in by_name[name].note) == metrics_row
        if metrics_row:
            assert by_name["hidden_states"].status == "skipped"
            assert "module inputs" in by_name["hidden_states"].note
        assert result.real_tokens == sum(int(b.attention_mask.sum()) for b in workload.batches)
