"""The benchmark harness's own logic: paired ratios, rotation, agreement, the markdown writer.

None of this needs the peer tools (TransformerLens, nnsight): they live only in the
benchmark's environment. The last test runs the harness end to end on a tiny random Llama
with the peers that need nothing but transformers, to check that each method's masked means
agree with the float64 reference — including the last layer, where transformers 5 would
hand back the final norm's output by default.
"""

from __future__ import annotations

import json

import attrs

import pytest
import torch

from bench.harness import max_abs_difference, paired_ratios, rotated, run_workload, time_repetitions
from bench.peers import PEERS, masked_mean, over_batches
from bench.report_md import render_markdown, write_reports
from bench.results import MethodResult, SuiteResult, WorkloadResult
from bench.workloads import Batch, Workload, random_batches, word_texts


def test_rotation_puts_every_method_in_every_position():
    names = ["plain", "hooks", "tl"]
    orders = [rotated(names, shift) for shift in range(3)]
    assert orders[1] == ["hooks", "tl", "plain"]
    for position in range(3):
        assert sorted(order[position] for order in orders) == sorted(names)
    assert rotated(names, 4) == orders[1]
    assert rotated([], 2) == []


def test_paired_ratio_is_the_median_of_per_repetition_ratios():
    times = {"plain": [2.0, 4.0, 1.0], "hooks": [3.0, 4.0, 3.0]}
    ratios = paired_ratios(times)
    # per-repetition ratios 1.5, 1.0, 3.0: median 1.5 — not 10/7, the ratio of the totals
    assert ratios["hooks"] == pytest.approx((1.5, 1.0, 3.0))
    assert ratios["plain"] == (1.0, 1.0, 1.0)


def test_paired_ratio_refuses_unpaired_repetitions():
    with pytest.raises(ValueError, match="repetitions"):
        paired_ratios({"plain": [1.0, 2.0], "hooks": [1.0]})


def test_timing_runs_each_method_once_per_repetition_in_rotated_order():
    calls: list[str] = []

    def runner_for(name):
        return lambda batches: calls.append(name) or {}

    runners = {name: runner_for(name) for name in ("plain", "a", "b")}
    times = time_repetitions(runners, [], repetitions=4)
    assert calls == ["plain", "a", "b", "a", "b", "plain", "b", "plain", "a", "plain", "a", "b"]
    assert all(len(seconds) == 4 and min(seconds) >= 0 for seconds in times.values())


def test_masked_mean_averages_only_real_tokens():
    hidden = torch.randn(3, 5, 4)  # [B, S, H]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    expected = torch.stack([hidden[b, : int(mask[b].sum())].mean(dim=0) for b in range(3)])
    torch.testing.assert_close(masked_mean(hidden, mask), expected)


def test_over_batches_joins_samples_in_batch_order():
    batches = [Batch(input_ids=torch.full((2, 3), i), attention_mask=torch.ones(2, 3, dtype=torch.long))
               for i in range(3)]
    run = over_batches(lambda batch: {0: batch.input_ids[:, :1].float()})
    assert run(batches)[0].flatten().tolist() == [0, 0, 1, 1, 2, 2]


def test_max_abs_difference():
    reference = {0: torch.zeros(2, 3, dtype=torch.float64), 4: torch.ones(2, 3, dtype=torch.float64)}
    outputs = {0: torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, -0.25]]), 4: torch.ones(2, 3)}
    assert max_abs_difference(outputs, reference) == 0.5
    assert max_abs_difference({}, reference) is None
    with pytest.raises(ValueError, match="layers"):
        max_abs_difference({0: outputs[0]}, reference)


def _suite() -> SuiteResult:
    plain = MethodResult(name="plain", label="plain HF forward", status="ok", seconds_per_batch=0.5,
                         tokens_per_s=4096.0, ratio_to_plain=1.0, ratio_min=1.0, ratio_max=1.0,
                         rss_setup_mib=110.0, rss_peak_mib=200.0, repetition_seconds=(0.5, 0.5))
    hooks = MethodResult(name="forward_hooks", label="forward | hooks", status="ok",
                         seconds_per_batch=0.52, tokens_per_s=3938.0, ratio_to_plain=1.04,
                         ratio_min=1.01, ratio_max=1.08, rss_setup_mib=111.0, rss_peak_mib=300.0,
                         max_abs_diff=6.9e-7, repetition_seconds=(0.52, 0.52))
    broken = MethodResult(name="nnsight", label="nnsight", status="failed",
                          note="RuntimeError: boom")
    ran = WorkloadResult(name="compute_bound", description="8 layers", status="ok",
                         shape="1 × [8 × 256]", real_tokens=2048, n_batches=1, repetitions=2,
                         note="memory measured twice", methods=(plain, hooks, broken))
    skipped = WorkloadResult(name="minilm_sentences", description="MiniLM", status="skipped",
                             note="`.cache/models/all-MiniLM-L6-v2` is absent")
    return SuiteResult(date="2026-11-23 23:00 UTC", command=".venv-bench/bin/python -m bench --quick",
                       quick=True, machine={"CPU": "test cpu, 2 cores"}, workloads=(ran, skipped),
                       seconds=42.0)


def test_markdown_has_commands_machine_and_one_row_per_method():
    text = render_markdown(_suite())
    assert ".venv-bench/bin/python -m bench --quick" in text
    assert "bash bench/setup_env.sh" in text
    assert "- CPU: test cpu, 2 cores" in text
    assert "2026-11-23 23:00 UTC" in text
    section = text.split("### `compute_bound`", 1)[1]
    table = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 4  # header + 3 methods
    hooks_row = next(line for line in table if "hooks" in line)
    assert "1.04× (1.01–1.08)" in hooks_row
    assert "1.50×" in hooks_row  # peak RSS 300 vs plain's 200
    assert "6.9e-07" in hooks_row
    assert "forward \\| hooks" in hooks_row  # a pipe in a label cannot break the table
    assert all(line.count(" | ") == table[0].count(" | ") for line in table)
    assert "failed: RuntimeError: boom" in text
    assert "Note: memory measured twice." in text
    assert "**Skipped:** `.cache/models/all-MiniLM-L6-v2` is absent" in text


def test_reports_are_written_with_the_raw_numbers(tmp_path):
    markdown, raw = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    write_reports(_suite(), markdown_path=markdown, json_path=raw)
    assert markdown.read_text().startswith("# Benchmarks")
    data = json.loads(raw.read_text())
    hooks = data["workloads"][0]["methods"][1]
    assert hooks["ratio_to_plain"] == 1.04 and hooks["repetition_seconds"] == [0.52, 0.52]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BENCHMARKS.md", "results.json"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_transformers_only_peers_agree_with_the_float64_reference(tiny_llama, monkeypatch):
    import bench.workloads as workloads

    monkeypatch.setattr(workloads, "VOCAB_SIZE", 64)
    batches = random_batches(n_batches=2, batch_size=3, seq_len=8, seed=0)
    workload = Workload(name="tiny", description="tiny", checkpoint=tiny_llama, family="decoder",
                        n_layers=2, layers=(0, 1), batches=batches, texts=word_texts(batches))
    methods = [m for m in PEERS if m.name in ("plain", "hidden_states", "forward_hooks")]
    result = run_workload(workload, methods, repetitions=2, quick=True, measure_memory=False)
    by_name = {m.name: m for m in result.methods}
    assert all(m.status == "ok" for m in result.methods)
    assert by_name["plain"].ratio_to_plain == 1.0 and by_name["plain"].max_abs_diff is None
    for name in ("hidden_states", "forward_hooks"):
        assert by_name[name].max_abs_diff < 1e-5
        assert len(by_name[name].repetition_seconds) == 2
    assert result.real_tokens == sum(int(b.attention_mask.sum()) for b in workload.batches)


def test_targets_judge_expc_against_the_bound_and_the_peers():
    from bench.targets import verdicts

    def row(name, ratio, peak=None):
        return MethodResult(name=name, label=name, status="ok", ratio_to_plain=ratio, ratio_min=ratio,
                            ratio_max=ratio, rss_peak_mib=peak)

    compute = WorkloadResult(name="compute_bound", description="", status="ok", methods=(
        row("plain", 1.0, 200.0), row("forward_hooks", 1.04, 180.0), row("expc_compiled", 1.03, 150.0)))
    latency = WorkloadResult(name="latency_bound", description="", status="ok", methods=(
        row("plain", 1.0), row("nnsight", 1.8), row("expc_compiled", 1.02)))
    suite = attrs.evolve(_suite(), workloads=(compute, latency))
    found = {v.target.split(": ", 1)[1]: v for v in verdicts(suite)}
    assert found["expc within 1.05× of the plain forward"].met is True
    assert found["expc has the lowest peak memory of all methods"].met is True
    latency_verdict = found["expc faster than every peer, the plain forward included"]
    assert latency_verdict.met is False and "best peer plain 1.00×" in latency_verdict.measured
    assert len(found) == 3  # the selective target needs a workload that did not run
    assert "| `compute_bound`: expc within 1.05× of the plain forward | 1.03× | yes |" in render_markdown(suite)


def test_results_json_reads_back_into_the_same_suite(tmp_path):
    from bench.results import suite_from_dict

    raw = tmp_path / "results.json"
    write_reports(_suite(), markdown_path=tmp_path / "BENCHMARKS.md", json_path=raw)
    assert suite_from_dict(json.loads(raw.read_text())) == _suite()
