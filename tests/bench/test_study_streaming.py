"""The `streaming` study on a few short samples: both runs shard, every shard write is timed,
and the verdicts follow from its own numbers."""

from __future__ import annotations

import pytest

from bench import study_streaming


@pytest.mark.slow
def test_streaming_study_measures_and_judges(tmp_path, monkeypatch):
    monkeypatch.setattr(study_streaming, "CACHE_DIR", tmp_path)
    monkeypatch.setitem(study_streaming.DATA, "quick", (4, 32))
    monkeypatch.setitem(study_streaming.SHARD_SIZE, "quick", "20KB")
    result = study_streaming.measure(quick=True)
    assert result.status == "ok"
    runs = result.raw["runs"]
    assert sorted(runs) == [4, 40]
    small, large = runs[4], runs[40]
    assert large["tokens"] == 10 * small["tokens"] == 40 * 32
    assert 1 < small["shards"] < large["shards"]  # both runs streamed to shards
    assert all(run["write_s"] > 0 and run["disk_s"] > 0 and run["disk_in_shards_s"] > 0
               and run["peak_rss_mib"] > 100
               for run in runs.values())
    growth, throughput = result.verdicts
    assert result.raw["growth"] == pytest.approx(
        large["peak_rss_mib"] / small["peak_rss_mib"] - 1)
    assert growth.met == (result.raw["growth"] < 0.10)
    assert result.raw["of_disk"] == pytest.approx(large["disk_s"] / large["write_s"])
    assert throughput.met == (result.raw["of_disk"] >= 0.80)
    assert len(result.rows) == 2 and all(len(row) == len(result.columns) for row in result.rows)
