"""The examples that read an earlier run folder (`run = "..."`: ablation, steering, patching)
run as their comments say: the companion that writes that folder first, then the example,
in a copy of the examples so the run folders land in a temporary place. Each ends complete
with finite effects, and its report has the Effects section."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import expc

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
READS = re.compile(r'run\s*=\s*"([^"]+)"')
WRITES = re.compile(r'\bdir\s*=\s*"([^"]+)"')


def _writer_of() -> dict[str, str]:
    """Each example's output folder -> the example."""
    return {match.group(1): path.name for path in EXAMPLES.glob("*.exp")
            for match in WRITES.finditer(path.read_text(encoding="utf-8"))}


CONSUMERS = sorted(p.name for p in EXAMPLES.glob("*.exp") if READS.search(p.read_text()))


def _expc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "expc", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_the_consumers_are_the_issue_s_three_examples():
    assert {"ablation.exp", "steering.exp", "patching.exp"} <= set(CONSUMERS)


@pytest.mark.slow
@pytest.mark.parametrize("example", CONSUMERS)
def test_example_runs_after_its_companion(tmp_path, example):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    for shared in (".cache", "bench"):  # the fetched MiniLM, the scoring sentences
        if (REPO / shared).exists():
            (tmp_path / shared).symlink_to(REPO / shared)
    text = (EXAMPLES / example).read_text(encoding="utf-8")
    writers = _writer_of()
    for source in sorted(set(READS.findall(text))):
        companion = writers[source]
        proc = _expc("run", f"examples/{companion}", "--quiet", cwd=tmp_path)
        assert proc.returncode == 0, f"{companion}: {proc.stderr}"
    proc = _expc("run", f"examples/{example}", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (out,) = WRITES.findall(text)
    run = expc.open_run(tmp_path / out)
    assert run.status == "complete"
    effects = [key for key in run.tensors if key.startswith("effect/")]
    interventions = [key for key in run.tensors if key.startswith("intervention/")]
    assert effects and interventions
    for key in effects:
        assert run.tensors[key].isfinite().all(), key
    report = _expc("report", out, cwd=tmp_path)
    assert report.returncode == 0 and "Effects" in report.stdout, report.stderr
