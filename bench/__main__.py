"""`python -m bench [--quick]`: run the comparison suite, write BENCHMARKS.md and bench/results.json.

Run it from the benchmark's environment (`bash bench/setup_env.sh` once, then
`.venv-bench/bin/python -m bench`); in an environment without TransformerLens or nnsight
those rows say so and the rest still runs. The suite is the workloads (expc against the
peer tools) and then the component studies (`bench/studies.py`); `--workloads`/`--studies`
pick some, `--no-workloads`/`--no-studies` none, and `--append` keeps the rest from the
existing results.json. `--quick` runs smaller workloads, fewer repetitions and each study's
small settings and no memory probes (under two minutes); the full suite stays under ten.

Every method runs with the OpenMP wait policy of the environment (libgomp's default unless
`OMP_WAIT_POLICY` is set; BENCHMARKS.md names it). The default spins, which is fastest on an
idle machine — ~15% faster per call than PASSIVE in latency_bound — and stalls 2-thread ops
when another process holds a core; on a shared machine run the suite with
`OMP_WAIT_POLICY=PASSIVE` (what `expc run` sets for itself) and compare ratios, not times.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import attrs

from bench.harness import TORCH_THREADS, quiet_libraries, run_workload
from bench.methods import ALL_METHODS
from bench.report_md import write_reports
from bench.results import StudyResult, SuiteResult, WorkloadResult, suite_from_dict
from bench.studies import STUDIES, load_average, run_study
from bench.workloads import BUILDERS, DESCRIPTIONS, REPO_ROOT, build_workload, unavailable_reason

log = logging.getLogger("bench")

REPETITIONS = {"full": 5, "quick": 3}
# Each latency_bound repetition is already 200 calls, which average out per-call noise; three
# of them keep the full suite under ten minutes.
MAX_REPETITIONS = {"latency_bound": 3}
PACKAGES = ("torch", "transformers", "transformer-lens", "nnsight", "expc")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 ** 2:.1f} GiB"
    return "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def describe_machine() -> dict[str, str]:
    machine = {
        "CPU": f"{_cpu_model()}, {os.cpu_count()} cores visible, torch threads {TORCH_THREADS}, "
               f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}",
        "memory": _memory_total(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "expc commit": _commit(),
    }
    machine.update({package: _version(package) for package in PACKAGES})
    return machine


def _command_line(argv: list[str]) -> str:
    python = Path(sys.executable)
    shown = os.path.relpath(python, REPO_ROOT) if python.is_relative_to(REPO_ROOT) else str(python)
    return " ".join([shown, "-m", "bench", *argv])


def _measure(name: str, *, quick: bool, memory: bool, repetitions: int) -> WorkloadResult:
    """Run one workload, or record why it cannot run here."""
    reason = unavailable_reason(name)
    if reason:
        log.warning("skipping %s: %s", name, reason)
        return WorkloadResult(name=name, description=DESCRIPTIONS[name], status="skipped",
                              note=reason)
    load_at_start = load_average()
    result = run_workload(build_workload(name, quick=quick), ALL_METHODS,
                          repetitions=repetitions, quick=quick, measure_memory=memory)
    result = attrs.evolve(result, load_average=f"{load_at_start} → {load_average()}")
    if memory:
        return result
    return attrs.evolve(result, note="peak memory not measured in this run (`--no-memory` or "
                                     "`--quick`: a probe is a fresh interpreter per method)")


def _repetitions(name: str, quick: bool) -> int:
    """A workload's repetitions when the command line does not set them."""
    usual = REPETITIONS["quick" if quick else "full"]
    return min(usual, MAX_REPETITIONS.get(name, usual))


@attrs.frozen(kw_only=True)
class Earlier:
    """With --append: what an earlier results.json holds that this run does not re-measure."""

    workloads: tuple[WorkloadResult, ...] = ()
    studies: tuple[StudyResult, ...] = ()
    commands: tuple[str, ...] = ()


def _earlier_suite(path: Path, *, rerun_workloads: list[str], rerun_studies: list[str]) -> Earlier:
    if not path.exists():
        return Earlier()
    earlier = suite_from_dict(json.loads(path.read_text(encoding="utf-8")))
    return Earlier(workloads=tuple(w for w in earlier.workloads if w.name not in rerun_workloads),
                   studies=tuple(s for s in earlier.studies if s.name not in rerun_studies),
                   commands=tuple(earlier.command.splitlines()))


def _in_order(results, order) -> tuple:
    """Workload or study results sorted as the suite lists them (unknown names last)."""
    rank = {name: index for index, name in enumerate(order)}
    return tuple(sorted(results, key=lambda r: rank.get(r.name, len(rank))))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads, fewer repetitions, the studies' small settings")
    parser.add_argument("--workloads", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--no-workloads", action="store_true", help="run no workload")
    parser.add_argument("--studies", nargs="+", choices=list(STUDIES), default=list(STUDIES),
                        help="component studies to run after the workloads (default: all)")
    parser.add_argument("--no-studies", action="store_true", help="run no study")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory probes")
    parser.add_argument("--repetitions", type=int, help="override the repetitions per workload")
    parser.add_argument("--append", action="store_true",
                        help="keep the other workloads and studies of an existing results.json")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: rewrite the markdown from the existing results.json")
    parser.add_argument("--markdown", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    if args.no_workloads:
        args.workloads = []
    if args.no_studies:
        args.studies = []
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_libraries()

    if args.render_only:
        suite = suite_from_dict(json.loads(args.json.read_text(encoding="utf-8")))
        write_reports(suite, markdown_path=args.markdown, json_path=args.json)
        return
    started = time.perf_counter()
    command, machine = _command_line(argv), describe_machine()
    workloads: list[WorkloadResult] = []
    studies: list[StudyResult] = []

    def write() -> SuiteResult:
        # Rewritten after every workload and study, so an interrupted suite keeps its numbers;
        # with --append the file is re-read each time, so another suite appending meanwhile
        # keeps what it wrote.
        earlier = (_earlier_suite(args.json, rerun_workloads=args.workloads,
                                  rerun_studies=args.studies) if args.append else Earlier())
        commands = [c for c in earlier.commands if c != command] + [command]
        suite = SuiteResult(
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            command="\n".join(commands), quick=args.quick, machine=machine,
            workloads=_in_order([*earlier.workloads, *workloads], BUILDERS),
            studies=_in_order([*earlier.studies, *studies], STUDIES),
            seconds=time.perf_counter() - started,
        )
        write_reports(suite, markdown_path=args.markdown, json_path=args.json)
        return suite

    for name in args.workloads:
        workloads.append(_measure(name, quick=args.quick,
                                  repetitions=args.repetitions or _repetitions(name, args.quick),
                                  memory=not (args.no_memory or args.quick)))
        write()
    for name in args.studies:
        studies.append(run_study(STUDIES[name], quick=args.quick))
        write()
    suite = write()
    log.info("wrote %s and %s in %.0f s", args.markdown, args.json, suite.seconds)


if __name__ == "__main__":
    main()
