"""The benchmark harness's own logic: paired ratios, run order, agreement, the markdown writer.

None of this needs the peer tools (TransformerLens, nnsight): they live only in the
benchmark's environment. The methods themselves, run end to end on a tiny model, are tested
in `test_metric_methods.py`.
"""

from __future__ import annotations

import json

import attrs

import pytest
import torch

from bench.harness import (agreement_note, max_abs_difference, max_abs_difference_by_kind,
                           paired_ratios, run_order, run_workload, time_repetitions)
from bench.peers import masked_mean, over_batches
from bench.report_md import render_markdown, write_reports
from bench.results import MethodResult, SuiteResult, WorkloadResult
from bench.workloads import Batch


def test_run_order_varies_positions_and_neighbours_and_is_reproducible():
    names = ["plain", "hidden", "hooks", "tl", "nnsight", "expc", "expc_run"]
    orders = [run_order(names, repetition) for repetition in range(5)]
    assert all(sorted(order) == sorted(names) for order in orders)
    assert orders == [run_order(names, repetition) for repetition in range(5)]
    assert len({order.index("plain") for order in orders}) > 1
    before_plain = {order[order.index("plain") - 1] for order in orders if order[0] != "plain"}
    assert len(before_plain) > 1  # a rotation would keep "expc_run" there every time
    assert run_order([], 3) == []


def test_paired_ratio_is_the_median_of_per_repetition_ratios():
    times = {"plain": [2.0, 4.0, 1.0], "hooks": [3.0, 4.0, 3.0]}
    ratios = paired_ratios(times)
    # per-repetition ratios 1.5, 1.0, 3.0: median 1.5 — not 10/7, the ratio of the totals
    assert ratios["hooks"] == pytest.approx((1.5, 1.0, 3.0))
    assert ratios["plain"] == (1.0, 1.0, 1.0)


def test_paired_ratio_refuses_unpaired_repetitions():
    with pytest.raises(ValueError, match="repetitions"):
        paired_ratios({"plain": [1.0, 2.0], "hooks": [1.0]})


def test_timing_runs_each_method_once_per_repetition_in_run_order():
    calls: list[str] = []

    def runner_for(name):
        return lambda batches: calls.append(name) or {}

    runners = {name: runner_for(name) for name in ("plain", "a", "b")}
    times = time_repetitions(runners, [], repetitions=4)
    assert calls == [name for repetition in range(4) for name in run_order(list(runners), repetition)]
    assert all(len(seconds) == 4 and min(seconds) >= 0 for seconds in times.values())


def test_masked_mean_averages_only_real_tokens():
    hidden = torch.randn(3, 5, 4)  # [B, S, H]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    expected = torch.stack([hidden[b, : int(mask[b].sum())].mean(dim=0) for b in range(3)])
    torch.testing.assert_close(masked_mean(hidden, mask), expected)


def test_over_batches_joins_samples_in_batch_order():
    batches = [Batch(input_ids=torch.full((2, 3), i), attention_mask=torch.ones(2, 3, dtype=torch.long))
               for i in range(3)]
    run = over_batches(lambda batch: {"resid_out/0": batch.input_ids[:, :1].float()})
    assert run(batches)["resid_out/0"].flatten().tolist() == [0, 0, 1, 1, 2, 2]


def test_max_abs_difference_over_every_key_and_per_kind():
    reference = {"resid_out/0": torch.zeros(2, 3, dtype=torch.float64),
                 "resid_out/4": torch.ones(2, 3, dtype=torch.float64),
                 "channel_contribution/0": torch.zeros(5, dtype=torch.float64),
                 "kv_head_contribution/0": torch.ones(2, dtype=torch.float64)}
    outputs = {"resid_out/0": torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, -0.25]]),
               "resid_out/4": torch.ones(2, 3),
               "channel_contribution/0": torch.tensor([0.0, 0.0, 0.75, 0.0, 0.0]),
               "kv_head_contribution/0": torch.tensor([1.0, 1.125])}
    assert max_abs_difference(outputs, reference) == 0.75
    assert max_abs_difference_by_kind(outputs, reference) == {
        "resid_out": 0.5, "channel_contribution": 0.75, "kv_head_contribution": 0.125}
    assert agreement_note(outputs, reference) == (
        "max abs diff: resid_out 5.0e-01, channel_contribution 7.5e-01, kv_head_contribution 1.2e-01")
    captures_only = {key: outputs[key] for key in ("resid_out/0", "resid_out/4")}
    assert agreement_note(captures_only, {key: reference[key] for key in captures_only}) == ""
    assert max_abs_difference({}, reference) is None
    with pytest.raises(ValueError, match="keys"):
        max_abs_difference(captures_only, reference)


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


def test_targets_judge_expc_against_the_bound_and_the_peers():
    from bench.targets import verdicts

    def row(name, ratio, peak=None):
        return MethodResult(name=name, label=name, status="ok", ratio_to_plain=ratio, ratio_min=ratio,
                            ratio_max=ratio, rss_peak_mib=peak)

    compute = WorkloadResult(name="compute_bound", description="", status="ok", methods=(
        row("plain", 1.0, 200.0), row("forward_hooks", 1.04, 180.0), row("expc_compiled", 1.03, 150.0)))
    latency = WorkloadResult(name="latency_bound", description="", status="ok", methods=(
        row("plain", 1.0), row("nnsight", 1.8), row("expc_compiled", 1.02)))
    metrics = WorkloadResult(name="metrics", description="", status="ok", methods=(
        row("plain", 1.0), row("forward_hooks", 1.9), row("expc_compiled", 1.35)))
    suite = attrs.evolve(_suite(), workloads=(compute, metrics, latency))
    found = {v.target.split(": ", 1)[1]: v for v in verdicts(suite)}
    assert found["expc within 1.05× of the plain forward"].met is True
    assert found["expc has the lowest peak memory of all methods"].met is True
    latency_verdict = found["expc faster than every peer, the plain forward included"]
    assert latency_verdict.met is False and "best peer plain 1.00×" in latency_verdict.measured
    metrics_verdict = found["expc with both metrics at every layer ≤ 1.3× of the plain forward"]
    assert metrics_verdict.met is False and metrics_verdict.measured == "1.35×"
    assert len(found) == 4  # the selective target needs a workload that did not run
    assert "| `compute_bound`: expc within 1.05× of the plain forward | 1.03× | yes |" in render_markdown(suite)


def test_results_json_reads_back_into_the_same_suite(tmp_path):
    from bench.results import suite_from_dict

    raw = tmp_path / "results.json"
    write_reports(_suite(), markdown_path=tmp_path / "BENCHMARKS.md", json_path=raw)
    assert suite_from_dict(json.loads(raw.read_text())) == _suite()
