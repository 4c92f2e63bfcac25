"""`expc report` on a 32-layer run with every metric: target under 10 s, HTML under 5 MB.

The run folder is synthetic (the writer of `tests/report/conftest.py`, with model-sized
tensors): 32 layers split as a 16-layer trunk and 4 heads, mean captures of `resid_out` at
every layer (trunk and heads), a `full` capture with its mask, an attention pattern, all five
importance metrics at every layer (iterative at the last), hidden 1024, MLP 4096, 16
attention heads, 8 KV heads. Reported: the time to build and write the report in a warm
process (median of `--repeat` runs, matplotlib and torch already imported), the cold time of
the `expc report` command as a user runs it, and the size of the HTML.

    .venv/bin/python bench/bench_report.py [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bench_report")

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 10.0
TARGET_BYTES = 5 * 1024 * 1024
RUN = dict(n_layers=32, trunk=16, heads=4, hidden=1024, intermediate=4096, samples=32,
           seq=64, attn_heads=16, kv_heads=8)


def _synthetic_writer():
    """`write_run` from the report tests' conftest (loaded by path: tests are no package)."""
    spec = importlib.util.spec_from_file_location("report_synthetic",
                                                  REPO / "tests/report/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the run folder here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from expc.report.build import write_report

    with tempfile.TemporaryDirectory() as tmp:
        run = (args.keep or Path(tmp)) / "run32"
        started = time.perf_counter()
        _synthetic_writer()(run, **RUN)
        log.info("synthetic run written in %.1f s: %s", time.perf_counter() - started,
                 ", ".join(f"{k}={v}" for k, v in RUN.items()))
        seconds, cpu = [], []
        for _ in range(args.repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            files = write_report(run)
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "expc", "report", str(run)], check=True,
                       capture_output=True)
        cold = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cold_cpu = usage.ru_utime + usage.ru_stime
        size = files.html.stat().st_size
        log.info("report build (warm, median of %d): wall %.2f s, cpu %.2f s  [wall %s]",
                 args.repeat, statistics.median(seconds), statistics.median(cpu),
                 ", ".join(f"{s:.2f}" for s in seconds))
        log.info("`expc report` command (cold, incl. imports): wall %.2f s, cpu %.2f s "
                 "(target < %.0f s)", cold, cold_cpu, TARGET_SECONDS)
        log.info("report.html: %.2f MB (target < %.0f MB); sections: %s", size / 2**20,
                 TARGET_BYTES / 2**20, ", ".join(files.sections))
        ok = min(cold, cold_cpu) < TARGET_SECONDS and size < TARGET_BYTES
        log.info("targets %s", "met" if ok else "NOT met")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
