"""Study `check_time`: `expc check` is a CI tool, so it must stay instant as specs grow.

Parse + check of generated specs of about 50, 500 and 5,000 lines in this process, and the
command a user runs (`expc check examples/quickstart.exp`, a fresh interpreter each time),
each as wall and CPU seconds (`bench_check`'s functions); and whether `expc check` ever
imports torch (it must not: a CI job without torch still checks specs).
"""

from __future__ import annotations

import statistics

from bench.bench_check import (REPO, TARGET_BIG_S, TARGET_CLI_S, time_check, time_cli,
                               torch_imported_by_check)
from bench.results import StudyResult, StudyVerdict

NAME = "check_time"
DESCRIPTION = ("`expc check` time against spec size (parse + checks in-process), the command "
               "as a user runs it, and whether it imports torch")
SIZES = (50, 500, 5000)
REPEATS = {"full": 7, "quick": 3}
QUICKSTART = "examples/quickstart.exp"


def per_thousand_lines(seconds: float, lines: int) -> float:
    return 1000 * seconds / lines


def row_cells(what: str, lines: int, wall: float, cpu: float, *, per_line: bool = True
              ) -> tuple[str, ...]:
    """A table row; `per_line` off where start-up, not the spec's size, is the cost."""
    scaled = f"{per_thousand_lines(wall, lines) * 1000:.0f} ms" if per_line else "—"
    return (what, f"{lines:,}", f"{wall * 1000:.0f} ms", f"{cpu * 1000:.0f} ms", scaled)


def verdicts(*, cli_wall: float, largest: dict, torch_imported: bool) -> tuple[StudyVerdict, ...]:
    return (
        StudyVerdict(target=f"`expc check {QUICKSTART}` (fresh process) < {TARGET_CLI_S} s",
                     measured=f"{cli_wall:.2f} s wall", met=cli_wall < TARGET_CLI_S),
        StudyVerdict(target=f"parse + check a ~{SIZES[-1]:,}-line spec < {TARGET_BIG_S:.0f} s",
                     measured=f"{largest['wall_s']:.2f} s wall for {largest['lines']:,} lines",
                     met=largest["wall_s"] < TARGET_BIG_S),
        StudyVerdict(target="`expc check` never imports torch",
                     measured="torch imported" if torch_imported else "torch not imported",
                     met=not torch_imported),
    )


def measure(*, quick: bool) -> StudyResult:
    repeats = REPEATS["quick" if quick else "full"]
    by_size = []
    for size in SIZES:
        wall, cpu, lines = time_check(size, repeats)
        by_size.append({"lines": lines, "wall_s": statistics.median(wall),
                        "cpu_s": statistics.median(cpu)})
    cli_wall, cli_cpu = time_cli(repeats)
    cli = {"lines": (REPO / QUICKSTART).read_text().count("\n"),
           "wall_s": statistics.median(cli_wall), "cpu_s": statistics.median(cli_cpu)}
    torch_imported = torch_imported_by_check()
    rows = [row_cells("parse + check, in-process", s["lines"], s["wall_s"], s["cpu_s"])
            for s in by_size]
    rows.append(row_cells(f"`expc check {QUICKSTART}`, fresh process", cli["lines"],
                          cli["wall_s"], cli["cpu_s"], per_line=False))
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok",
        settings=(f"generated specs of ~{', ~'.join(f'{s:,}' for s in SIZES)} lines (many "
                  f"experiments with blocks, captures, metrics, comments); {repeats} "
                  "repetitions, medians; the model-shape checks included"),
        columns=("what", "lines", "wall", "CPU", "wall per 1,000 lines"),
        rows=tuple(rows),
        raw={"by_size": by_size, "cli_quickstart": cli, "torch_imported_by_check": torch_imported,
             "repeats": repeats},
        verdicts=verdicts(cli_wall=cli["wall_s"], largest=by_size[-1],
                          torch_imported=torch_imported))
