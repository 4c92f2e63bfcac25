"""Study `variants` on a tiny 8-layer Llama: every variant agrees with HF hooks, the table and
verdicts are built from the numbers. Nothing is judged on speed here (the suite measures that);
TransformerLens and nnsight are optional (absent in the project's environment, their rows are
then left out and the note says why)."""

from __future__ import annotations

import pytest
import torch

import bench.study_variants as study_variants
import bench.workloads as workloads
from bench.results import StudyResult
from bench.variant_methods import VariantSpec, spec_text
from bench.workloads import Batch, random_batches
from tests.bench.tiny_llama import build_tiny_llama

VOCAB = 64


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """An 8-layer Llama (hidden 32) with the bench's word-level tokenizer over 64 words."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-8"),
                            n_layers=study_variants.N_LAYERS, vocab=VOCAB)


def test_variants_study_on_a_tiny_model(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "VOCAB_SIZE", VOCAB)
    monkeypatch.setattr(study_variants, "CACHE_DIR", tmp_path)
    settings = study_variants.Settings(batch=3, seq=12, head_counts=(2, 4), repeats=1,
                                       overhead_repeats=1, memory=False, peers=("hf_hooks",))
    result = study_variants.measure(quick=True, settings=settings, checkpoint=tiny_llama)
    assert isinstance(result, StudyResult) and result.status == "ok"
    assert all(len(row) == len(result.columns) for row in result.rows)
    by_heads = result.raw["by_heads"]
    assert [n["heads"] for n in by_heads] == [2, 4]
    assert [n["trunk"] for n in by_heads] == [4, 4]  # trunk = auto: below mlp_out[4]
    for numbers in by_heads:
        assert numbers["max_abs_diff_vs_hf_hooks"]["expc"] < 1e-5  # every variant, real tokens
        assert numbers["ideal"] == pytest.approx(
            study_variants.ideal_speedup(numbers["heads"], 8, 4))
    agreement = result.verdicts[-1]
    assert agreement.met is True and "max abs diff" in agreement.measured
    assert result.raw["overhead"]["head_s"] is not None
    assert result.raw["memory_peak_mib"] == {}  # no probes asked for


def test_the_expc_variants_differ_where_they_ablate(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "VOCAB_SIZE", VOCAB)
    (batch,) = random_batches(n_batches=1, batch_size=2, seq_len=8, seed=0)
    run = study_variants.expc_variants(VariantSpec(heads=3, ablated=(6, 7)), checkpoint=tiny_llama,
                                       batch=batch, folder=tmp_path)
    with torch.inference_mode():
        untouched, *ablated = run(batch)
    assert run.model.hydra.trunk == 6
    assert all(not torch.equal(untouched, logits) for logits in ablated)


def test_spec_text_writes_one_intervention_per_head():
    batch = Batch(input_ids=torch.zeros(2, 5, dtype=torch.int64),
                  attention_mask=torch.ones(2, 5, dtype=torch.int64))
    text = spec_text(VariantSpec(heads=3, ablated=(4, 5), loss=True), checkpoint="ckpt",
                     data="d.jsonl", batch=batch, out="out")
    assert "trunk = auto" in text and "heads = 3" in text
    assert "intervene mlp_out[4] of heads[1] { set = zero }" in text
    assert "intervene mlp_out[5] of heads[2] { set = zero }" in text
    assert "effect loss" in text and "batch_size = 2" in text
    unsplit = spec_text(VariantSpec(heads=1, ablated=()), checkpoint="ckpt", data="d.jsonl",
                        batch=batch, out="out")
    assert "hydra" not in unsplit and "intervene" not in unsplit


def _numbers(heads: int, speedup: float) -> dict:
    ideal = study_variants.ideal_speedup(heads, 8, 4)
    return {"heads": heads, "speedup": speedup, "speedup_best_times": speedup,
            "best_peer": "hf_hooks", "ideal": ideal,
            "fraction_of_ideal": speedup / ideal, "max_abs_diff_vs_hf_hooks": {"expc": 2e-6}}


def test_verdicts_judge_speedup_memory_overhead_and_agreement():
    cost = {"fraction_of_head": 0.06, "overhead_s": 0.02, "head_s": 0.33,
            "edit_alone_fraction_of_head": 0.002}
    memory = {"expc": {1: 500.0, 4: 640.0}}
    speed, peak, overhead, agreement = study_variants.verdicts(
        [_numbers(4, 0.9 * study_variants.ideal_speedup(4, 8, 4))], memory, cost)
    assert speed.met is True and "90%" in speed.measured
    assert peak.met is False and peak.measured.startswith("1.28×")
    assert overhead.met is False and overhead.measured.startswith("+6.0%")
    assert agreement.met is True and agreement.measured == "max abs diff 2.0e-06"
