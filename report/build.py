"""`expc report`: read a run folder, build every section, write `report.html` and
`summary.md` side by side (atomically, like every file of a run folder).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

import attrs
import torch

from expc.report.effect_stats import effect_groups
from expc.report.nonfinite import nonfinite_keys
from expc.report.page import render_page
from expc.report.pruning_curve import with_pruning_curve
from expc.report.run_folder import open_run_folder
from expc.report.section_attention import attention_section
from expc.report.section_captures import captures_section
from expc.report.section_effects import effects_section
from expc.report.section_importance import importance_section
from expc.report.section_model_wide import model_wide_section
from expc.report.section_run import run_section
from expc.report.summary import render_summary
from expc.spec.run_format import REPORT, SUMMARY

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class ReportFiles:
    """What `write_report` wrote."""

    html: Path
    summary: Path
    sections: tuple[str, ...]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _one_torch_thread():
    """The report's tensor math is small: torch's worker threads would only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_report(run_dir: str | Path) -> tuple[str, str, tuple[str, ...]]:
    """(HTML, Markdown summary, section titles) of a run folder."""
    with _one_torch_thread():
        return _build(run_dir)


def _build(run_dir: str | Path) -> tuple[str, str, tuple[str, ...]]:
    started = time.perf_counter()
    folder = open_run_folder(run_dir)
    nonfinite = nonfinite_keys(folder)
    importance, candidates = importance_section(folder)
    effects = effect_groups(folder)
    importance = with_pruning_curve(importance, folder, effects)
    sections = [s for s in (run_section(folder, nonfinite=nonfinite),
                            effects_section(folder, effects), captures_section(folder),
                            model_wide_section(folder), importance, attention_section(folder))
                if s is not None]
    titles = tuple(s.title for s in sections)
    page = render_page(title=folder.title, status=folder.status, sections=sections)
    summary = render_summary(folder, sections=titles, candidates=candidates,
                             nonfinite=nonfinite, effects=effects)
    log.info("built report of %s in %.2f s (%d bytes)", folder.path,
             time.perf_counter() - started, len(page))
    return page, summary, titles


def write_report(run_dir: str | Path, out: str | Path | None = None) -> ReportFiles:
    """Write the HTML report (default `RUN_DIR/report.html`) and `summary.md` beside it."""
    page, summary, titles = build_report(run_dir)
    html_path = Path(run_dir) / REPORT if out is None else Path(out)
    summary_path = html_path.parent / SUMMARY
    _write_atomic(html_path, page)
    _write_atomic(summary_path, summary)
    return ReportFiles(html=html_path, summary=summary_path, sections=titles)
