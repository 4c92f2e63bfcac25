"""Study `nproc`: what a second torchrun process buys on this 2-core machine.

`expc run` of the same spec and data three ways (`bench_runtime`'s `part_nproc`, each a fresh
command, order rotated per repetition): one process with 2 torch threads, one process with 1
thread, and `--nproc 2` (torchrun, 1 thread per rank). The batch loop's time comes from the
run's manifest (`timings.seconds.run`, the slowest rank's); the wall time is the whole command,
interpreter and torchrun start-up included.
"""

from __future__ import annotations

import attrs

from bench import bench_runtime
from bench.results import StudyResult

NAME = "nproc"
DESCRIPTION = ("`expc run` throughput with 1 process (2 threads, 1 thread) against "
               "`--nproc 2` (torchrun, 1 thread per rank)")
FULL = attrs.evolve(bench_runtime.FULL, samples=16, repetitions=2)
QUICK = attrs.evolve(bench_runtime.QUICK, samples=8, repetitions=1)
BASELINE = "1 process, 2 threads"
COLUMNS = ("variant", "batch loop", "tokens/s (loop)", "command wall",
           f"loop speed-up vs {BASELINE}", "wall speed-up")


def _ratio(ratio: dict) -> str:
    return f"{ratio['median']:.2f}× ({ratio['min']:.2f}–{ratio['max']:.2f})"


def row_cells(name: str, row: dict, tokens: int) -> tuple[str, ...]:
    return (name, f"{row['run_s']:.2f} s", f"{tokens / row['run_s']:,.0f}",
            f"{row['wall_s']:.2f} s", _ratio(row["speedup_run"]), _ratio(row["speedup_wall"]))


def measure(*, quick: bool) -> StudyResult:
    settings = QUICK if quick else FULL
    checkpoint, work = bench_runtime.workspace("work-studies")
    found = bench_runtime.part_nproc(work, checkpoint, settings)
    tokens = found["tokens"]
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok",
        settings=(f"{bench_runtime.describe_model()}, {settings.samples} samples of "
                  f"{bench_runtime.MIN_LENGTH}–{bench_runtime.MAX_LENGTH} random tokens "
                  f"({tokens:,} tokens), batch {bench_runtime.BATCH_SIZE}, `resid_out[*]` mean; "
                  f"{settings.repetitions} repetitions"),
        columns=COLUMNS,
        rows=tuple(row_cells(name, row, tokens) for name, row in found["rows"].items()),
        raw=found)
