"""The component studies of the suite: name -> what it measures and the function measuring it.

Issue 7 asks for more than the tool comparisons: Hydra against N models, compile time
against depth, `expc check` against spec size, torchrun with 2 processes, and `mean` memory
against data size. Each lives in its own `bench/study_*.py` (built on the functions of the
component scripts it studies) and returns a `StudyResult`; `run_study` adds what every study
reports alike (time taken, machine load) and turns a crash into a failed study rather than a
lost suite.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

import attrs

from bench import (study_check_time, study_compile_time, study_hydra, study_memory, study_nproc,
                   study_prune, study_qwen3, study_selective, study_streaming, study_variants)
from bench.results import StudyResult

log = logging.getLogger("bench.studies")


@attrs.frozen(kw_only=True)
class Study:
    name: str
    description: str
    measure: Callable[..., StudyResult]  # measure(*, quick: bool) -> StudyResult


STUDIES: dict[str, Study] = {
    module.NAME: Study(name=module.NAME, description=module.DESCRIPTION, measure=module.measure)
    for module in (study_hydra, study_compile_time, study_check_time, study_nproc, study_memory,
                   study_variants, study_prune, study_qwen3, study_selective, study_streaming)
}


def load_average() -> str:
    """The machine's 1 / 5 / 15-minute load average, e.g. `0.4 / 1.1 / 2.0`."""
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def run_study(study: Study, *, quick: bool) -> StudyResult:
    """Measure one study; a study that raises is reported as failed with its error."""
    load_at_start = load_average()
    started = time.perf_counter()
    log.info("study %s (%s)", study.name, "quick" if quick else "full")
    try:
        result = study.measure(quick=quick)
    except Exception as exc:  # one broken study is a finding; the suite still reports the rest
        log.exception("study %s failed", study.name)
        result = StudyResult(name=study.name, description=study.description, status="failed",
                             note=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - started
    log.info("study %s took %.1f s", study.name, seconds)
    # Raw numbers as results.json will hold them (string keys), so a re-read suite is equal.
    return attrs.evolve(result, raw=json.loads(json.dumps(result.raw)), seconds=seconds,
                        load_average=f"{load_at_start} → {load_average()}")
