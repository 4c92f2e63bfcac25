"""The numbers one benchmark run produces, as plain frozen records.

`harness` fills the workload records and each study (`bench/studies.py`) its `StudyResult`;
`report_md` renders them to BENCHMARKS.md and `bench/results.json`. Keeping them apart from
both lets the markdown writer be tested on hand-made numbers.
"""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class MethodResult:
    """One method on one workload. Times are medians over repetitions; None = not measured."""

    name: str
    label: str
    status: str  # "ok" | "skipped" | "failed"
    note: str = ""
    seconds_per_batch: float | None = None
    tokens_per_s: float | None = None
    ratio_to_plain: float | None = None  # median of per-repetition (method / plain) times
    ratio_min: float | None = None
    ratio_max: float | None = None
    rss_setup_mib: float | None = None  # RSS after loading + wrapping, above the pre-run RSS
    rss_peak_mib: float | None = None  # peak RSS during the run, above the pre-run RSS
    max_abs_diff: float | None = None  # against the float64 reference; None when nothing captured
    repetition_seconds: tuple[float, ...] = ()


@attrs.frozen(kw_only=True)
class WorkloadResult:
    name: str
    description: str
    status: str  # "ok" | "skipped"
    note: str = ""
    shape: str = ""
    real_tokens: int = 0
    n_batches: int = 0
    repetitions: int = 0
    load_average: str = ""  # the machine's 1/5/15-minute load at start -> end of the workload
    methods: tuple[MethodResult, ...] = ()


@attrs.frozen(kw_only=True)
class StudyVerdict:
    """One of a study's targets against what the study measured."""

    target: str
    measured: str
    met: bool | None  # None: could not be measured in this run


@attrs.frozen(kw_only=True)
class StudyResult:
    """One component study (Hydra, compile time, ...): a table for people, raw numbers for JSON."""

    name: str
    description: str
    status: str  # "ok" | "failed"
    note: str = ""
    settings: str = ""  # what was run: sizes, repetitions (quick or full)
    load_average: str = ""  # the machine's 1/5/15-minute load at start -> end of the study
    seconds: float = 0.0  # how long the study took
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    raw: dict = attrs.field(factory=dict)
    verdicts: tuple[StudyVerdict, ...] = ()


@attrs.frozen(kw_only=True)
class SuiteResult:
    date: str
    command: str
    quick: bool
    machine: dict[str, str]
    workloads: tuple[WorkloadResult, ...]
    seconds: float
    studies: tuple[StudyResult, ...] = ()


def study_from_dict(data: dict) -> StudyResult:
    return StudyResult(**{**data, "columns": tuple(data["columns"]),
                          "rows": tuple(tuple(row) for row in data["rows"]),
                          "verdicts": tuple(StudyVerdict(**v) for v in data["verdicts"])})


def suite_from_dict(data: dict) -> SuiteResult:
    """The inverse of `attrs.asdict` on a `SuiteResult` (as read back from results.json).

    A results.json written before studies existed has no `studies` and reads as none.
    """
    workloads = tuple(
        WorkloadResult(**{**w, "methods": tuple(
            MethodResult(**{**m, "repetition_seconds": tuple(m["repetition_seconds"])})
            for m in w["methods"])})
        for w in data["workloads"])
    studies = tuple(study_from_dict(s) for s in data.get("studies", ()))
    return SuiteResult(**{**data, "workloads": workloads, "studies": studies})
