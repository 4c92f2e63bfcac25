"""The `prune` study on a tiny checkpoint: it builds its model, scores it, times the copy and
`expc prune`, and judges both targets from its own numbers."""

from __future__ import annotations

from bench import study_prune


def test_prune_study_measures_and_judges(tmp_path, monkeypatch):
    monkeypatch.setattr(study_prune, "CACHE_DIR", tmp_path)
    monkeypatch.setitem(study_prune.SHAPES, "quick", (64, 128, 4, 300, 4, 4))
    monkeypatch.setitem(study_prune.REPEATS, "quick", 1)
    result = study_prune.measure(quick=True)
    assert result.status == "ok"
    assert [len(result.raw[k]) for k in ("copy_s", "copy_fsync_s", "work_s", "peak_mib",
                                         "startup_s")] == [1] * 5
    commands = result.raw["command_s"]
    assert set(commands) == set(study_prune.KINDS) and all(len(t) == 1 for t in commands.values())
    assert all(value > 0 for value in result.raw["work_s"] + sum(commands.values(), []))
    copy = min(result.raw["copy_fsync_s"])
    time_verdict, command_verdict, memory_verdict = result.verdicts
    assert time_verdict.met == (min(result.raw["work_s"]) <= 2 * copy)
    assert command_verdict.met == (max(min(t) for t in commands.values()) <= 2 * copy)
    assert memory_verdict.met == (max(result.raw["peak_mib"])
                                  <= 1.2 * result.raw["largest_shard_mib"])
    assert (tmp_path / "prune-llama-quick" / "model.safetensors.index.json").exists()
