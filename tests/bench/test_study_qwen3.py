"""The `qwen3` study on a tiny checkpoint: it builds its model, runs both methods in fresh
processes, checks that they computed the same means, and judges both targets from its own
numbers."""

from __future__ import annotations

from bench import study_qwen3


def test_qwen3_study_measures_and_judges(tmp_path, monkeypatch):
    monkeypatch.setattr(study_qwen3, "CACHE_DIR", tmp_path)
    result = study_qwen3.measure(quick=True)
    assert result.status == "ok"
    assert [len(result.raw["runs"][m]) for m in ("hf", "expc")] == [1, 1]
    assert result.raw["max_abs_diff"]["expc"] < 0.05  # bf16 activations, the same numbers
    time_verdict, memory_verdict = result.verdicts
    assert time_verdict.met == (result.raw["ratios"][0] <= 1.1)
    peak = {m: result.raw["runs"][m][0]["peak_mib"] for m in ("hf", "expc")}
    assert memory_verdict.met == (peak["expc"] <= peak["hf"])
    assert [row[0] for row in result.rows][1] == "`expc run`, `resid_out[*]` mean"
