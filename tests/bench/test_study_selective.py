"""The `selective` study on a tiny checkpoint: both specs run as whole processes, the
selective one builds only its layers, and both targets are judged from the study's numbers."""

from __future__ import annotations

from bench import study_selective


def test_selective_study_measures_and_judges(tmp_path, monkeypatch):
    monkeypatch.setattr(study_selective, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(study_selective, "SHAPE", (64, 128, 4, 300, 4, 2))
    monkeypatch.setitem(study_selective.DATA, "quick", (8, 16))
    monkeypatch.setitem(study_selective.REPEATS, "quick", 1)
    result = study_selective.measure(quick=True)
    assert result.status == "ok"
    assert [r["layers_built"] for r in result.raw["in_process"]] == [2]
    (selective,), (full,) = result.raw["runs"].values()
    assert 0 < selective["total"] < selective["process"]
    assert result.raw["ratios"] == [selective["process"] / full["process"]]
    process_verdict, compile_verdict = result.verdicts
    assert process_verdict.met == (result.raw["ratios"][0] <= 0.25)
    assert "of 4 layers" in process_verdict.target
    assert (tmp_path / "selective-llama-4x64" / "model.safetensors.index.json").exists()
