"""Peak memory of one method on one workload, measured in this fresh process.

    python -m bench.rss_probe WORKLOAD METHOD [--quick]

Imports torch and transformers and builds the workload's data first; the RSS then is the
starting point. The kernel's high-water mark (VmHWM) is reset to the current RSS there
(`/proc/self/clear_refs`), so that loading the data cannot inflate the peak. Prints one JSON
line: RSS after loading and wrapping the model, and peak RSS over a full pass, both in MiB
above the starting point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.harness import quiet_libraries
from bench.methods import method_named
from bench.workloads import build_workload

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def status_mib(field: str) -> float:
    """A `VmRSS`/`VmHWM`-style field of /proc/self/status, in MiB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> None:
    """Set the high-water mark to the current RSS (Linux: write 5 to clear_refs)."""
    CLEAR_REFS.write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload")
    parser.add_argument("method")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quiet_libraries()
    import transformers  # noqa: F401  (part of the starting point, as for every method)

    workload = build_workload(args.workload, quick=args.quick)
    method = method_named(args.method)
    reset_peak()
    start = status_mib("VmRSS")
    runner = method.build(workload)
    setup = status_mib("VmRSS") - start
    with torch.no_grad():
        runner(workload.batches)
    peak = status_mib("VmHWM") - start
    print(json.dumps({"setup_mib": setup, "peak_mib": peak}))


if __name__ == "__main__":
    main()
