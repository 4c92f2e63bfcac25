"""Study `memory`: does a `mean` capture keep memory flat as the data grows?

Peak RSS of one `expc run` (its own, in a fresh process) less the size of its results, at N
and 10N samples, for `resid_out[*]` aggregated by `mean` and, as the contrast, kept `full`
(`bench_runtime`'s `part_memory`). A `mean` run's state is `[N, H]` per layer, which is its
results; everything else should not grow with N. Target: growth under 10%.
"""

from __future__ import annotations

import attrs

from bench import bench_runtime
from bench.results import StudyResult, StudyVerdict

NAME = "memory"
DESCRIPTION = ("Peak RSS less results of `expc run` at N and 10N samples, `mean` against "
               "`full` aggregation of `resid_out[*]`")
FULL = attrs.evolve(bench_runtime.FULL, memory_samples=(256, 2560), memory_max_length=8)
QUICK = attrs.evolve(bench_runtime.QUICK, memory_samples=(64, 640), memory_max_length=8)


def row_cells(label: str, row: dict, samples: tuple[int, int]) -> tuple[str, ...]:
    cells = [label]
    for count in samples:
        run = row["runs"][count]
        cells += [f"{run['peak_rss_mib']:.0f} MiB", f"{run['results_mib']:.1f} MiB",
                  f"{run['peak_less_results_mib']:.0f} MiB"]
    return (*cells, f"{row['growth']:+.1%}")


def verdict(found: dict) -> StudyVerdict:
    growth = found["rows"]["mean"]["growth"]
    small, large = found["samples"]
    return StudyVerdict(
        target=(f"`mean` memory flat in data size: peak RSS less results grows "
                f"< {bench_runtime.MEMORY_GROWTH_TARGET:.0%} from N to 10N"),
        measured=f"{growth:+.1%} ({small} → {large} samples)",
        met=growth < bench_runtime.MEMORY_GROWTH_TARGET)


def measure(*, quick: bool) -> StudyResult:
    settings = QUICK if quick else FULL
    checkpoint, work = bench_runtime.workspace("work-studies")
    found = bench_runtime.part_memory(work, checkpoint, settings)
    small, large = settings.memory_samples
    columns = ["aggregation"]
    for count in (small, large):
        columns += [f"peak RSS, {count} samples", "results", "peak less results"]
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok",
        settings=(f"{bench_runtime.describe_model()}, N = {small} and 10N = {large} samples of "
                  f"up to {settings.memory_max_length} tokens, batch {bench_runtime.BATCH_SIZE}; "
                  "one fresh `expc run` per cell"),
        columns=(*columns, "growth N → 10N"),
        rows=tuple(row_cells(label, row, (small, large)) for label, row in found["rows"].items()),
        raw=found, verdicts=(verdict(found),))
