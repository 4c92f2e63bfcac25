"""`expc report` and `expc diff` on real run folders: every example spec run by `expc run`
(on a few samples), then reported. Each section of a report has its figures or tables (a
capture at a single layer is a number in a table), and a run compared with itself is the
same."""

from __future__ import annotations

from pathlib import Path

import pytest

from expc.cli import main
from expc.report.build import build_report
from expc.report.diff import diff_runs

REPO = Path(__file__).resolve().parents[2]
# Examples that read an earlier run folder (`run = "..."`) need their companion run first:
# tests/runtime/test_examples_with_sources.py runs them that way.
EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.exp") if 'run = "' not in p.read_text())
# few samples, but at least as many batches as the pruning rounds (4, or 6 in `scoring`)
DEFAULT_SETTINGS = ["data.limit=8", "data.batch_size=2"]
OVERRIDES = {"scoring.exp": ["data.limit=6", "data.batch_size=1"]}
SECTIONS_BY_PREFIX = {"capture/": "Captures", "importance/": "Importance"}


def test_every_example_is_covered():
    assert {"quickstart.exp", "scoring.exp", "logit_lens.exp"} <= set(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
def test_report_of_example_run(example, tmp_path, monkeypatch, page_parser):
    monkeypatch.chdir(REPO)  # specs name their data relative to the repository
    out = tmp_path / "run"
    settings = [a for s in OVERRIDES.get(example, DEFAULT_SETTINGS) for a in ("--set", s)]
    with pytest.raises(SystemExit) as exited:
        main(["run", f"examples/{example}", "--out", str(out), "--quiet", *settings])
    assert exited.value.code == 0, f"expc run {example} failed"
    html, summary, titles = build_report(out)
    page = page_parser(html)
    assert page.scripts == 0 and "status: **complete**" in summary
    assert all(count >= 1 for count in page.exhibits.values()), page.exhibits
    keys = diff_runs(str(out), str(out)).keys
    expected = {"Run"} | {title for prefix, title in SECTIONS_BY_PREFIX.items()
                          if any(k.key.startswith(prefix) for k in keys)}
    assert expected <= set(titles)
    assert diff_runs(str(out), str(out)).same
