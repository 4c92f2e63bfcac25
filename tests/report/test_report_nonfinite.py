"""The report and `expc diff` flag result tensors holding NaN or inf, in any run folder.

expc fails such runs today, but a folder written by an older expc, or a results file edited
since, may hold them: the report must still build, warn in its Run section (and summary)
with the counts per key, and `expc diff` must name the keys and never call them the same.
"""

from __future__ import annotations

import json

import pytest
import torch

from expc.cli import main
from expc.report import run_folder
from expc.report.build import build_report
from expc.report.diff import diff_runs, render_json
from expc.report.diff_text import render_text
from expc.report.nonfinite import NonFiniteCount

NAN, INF = float("nan"), float("inf")
DOCTORED = {  # key -> what is written into it
    "capture/resid_out_1": NonFiniteCount(nan=2),
    "capture/attn_out_1": NonFiniteCount(neginf=1, posinf=1),  # a `full` capture, in slices
    "importance/l2_norm/layers.1.mlp.down_proj/score": NonFiniteCount(posinf=1),
}


def doctor(tensors: dict[str, torch.Tensor]) -> None:
    tensors["capture/resid_out_1"][0, 3] = NAN
    tensors["capture/resid_out_1"][5, 0] = NAN
    tensors["capture/attn_out_1"][1, 2, 3] = -INF
    tensors["capture/attn_out_1"][4, 0, 0] = INF
    tensors["importance/l2_norm/layers.1.mlp.down_proj/score"][7] = INF


@pytest.fixture
def small_slices(monkeypatch):
    """Slices of a few rows, so that the counts are summed over several slices."""
    monkeypatch.setattr(run_folder, "CHUNK_ELEMENTS", 300)


def test_report_warns_with_the_counts_of_every_nonfinite_key(write_run, tmp_path, small_slices):
    run = write_run(tmp_path / "run", edit=doctor)
    html, summary, _ = build_report(run)
    run_html = html[html.index('id="run"'):html.index("</section>", html.index('id="run"'))]
    assert "3 result tensors hold NaN or inf values" in run_html
    for key, count in DOCTORED.items():
        row = f"<tr><td>{key}</td><td>{count.nan}</td><td>{count.posinf}</td>" \
              f"<td>{count.neginf}</td></tr>"
        assert row in run_html, key
    assert "**warning: 3 tensors hold NaN or inf**" in summary
    assert "capture/resid_out_1 (2 NaN)" in summary


def test_report_of_a_clean_run_has_no_nonfinite_warning(write_run, tmp_path):
    html, summary, _ = build_report(write_run(tmp_path / "run"))
    assert "NaN or inf" not in html and "warning" not in summary


def test_diff_names_nonfinite_keys_and_never_calls_them_the_same(write_run, tmp_path,
                                                                small_slices, capsys):
    clean = write_run(tmp_path / "a")
    doctored = write_run(tmp_path / "b", edit=doctor)
    result = diff_runs(str(clean), str(doctored))
    flagged = {k.key: k for k in result.keys if k.has_nonfinite}
    assert set(flagged) == set(DOCTORED)
    for key, count in DOCTORED.items():
        assert flagged[key].status == "nonfinite"
        assert (flagged[key].nonfinite_a, flagged[key].nonfinite_b) == (NonFiniteCount(), count)
    assert result.first_divergence.key == "capture/attn_out_1"  # layer 1, forward order
    text = render_text(result)
    assert "warning: capture/resid_out_1 holds NaN or inf: none (a), 2 NaN (b)" in text
    assert json.loads(render_json(result))["nonfinite_keys"] == sorted(
        DOCTORED, key=[k.key for k in result.keys].index)
    with pytest.raises(SystemExit) as exited:
        main(["diff", str(clean), str(doctored)])
    assert exited.value.code == 1
    assert "holds NaN or inf" in capsys.readouterr().out


def test_nan_against_nan_at_the_same_place_compares_equal_but_is_still_flagged(write_run,
                                                                               tmp_path):
    """Two runs holding the very same NaN: the differences ignore them (max abs 0), but
    the keys are `nonfinite`, so the runs are not passed as the same."""
    a = write_run(tmp_path / "a", edit=doctor)
    b = write_run(tmp_path / "b", edit=doctor)
    result = diff_runs(str(a), str(b))
    assert not result.same
    for key in DOCTORED:
        found = next(k for k in result.keys if k.key == key)
        assert (found.status, found.max_abs) == ("nonfinite", 0.0)
    assert all(k.same for k in result.keys if k.key not in DOCTORED)
