"""Speed of the language front end: `expc check` is a CI tool and must feel instant.

Two measurements, medians over repetitions, each as wall time and as CPU time (user +
system; on a busy machine wall time mostly measures the queue for a core):
- `expc check examples/quickstart.exp` as a user runs it: a fresh process each time
  (interpreter start, imports, parse, checks, the built-in model's config), target < 0.3 s.
  The same command under `python -X importtime` is not timed; instead the script asserts
  that torch was never imported.
- parsing + checking a generated 5,000-line spec in-process (many experiments with blocks,
  captures and importance statements, comments and blank lines), target < 1 s.

    .venv/bin/python bench/bench_check.py [--repeats 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bench_check")

REPO = Path(__file__).resolve().parent.parent
TARGET_CLI_S = 0.3
TARGET_BIG_S = 1.0
BIG_LINES = 5000

_EXPERIMENT = """\
# generated experiment {i}
experiment gen{i} {{
    model  = "builtin:tiny-llama"        # the built-in 4-layer Llama
    dtype  = float32
    seed   = {i}

    hydra {{
        trunk = 2
        heads = 3
    }}

    data {{
        source     = jsonl("examples/data/prompts.jsonl", field = "text")
        batch_size = 4
        limit      = {limit}
    }}

    capture resid_out[*]                            {{ aggregate = mean(mask = attention) }}
    capture attn_out[1, 3]                          {{ aggregate = full }}
    capture resid_out[-1] of heads[0:2] as resid_last {{ aggregate = max(mask = last) }}
    capture logits                                  {{ aggregate = dataset_mean }}

    importance l2_norm                at mlp.down_proj[*]
    importance kv_head_contribution   at self_attn.o_proj[2:] {{ optimize_for = latency }}
    importance iterative_channel      at mlp.down_proj[3]    {{ iterations = 4 }}
}}

"""


def generated_spec(lines: int) -> str:
    """At least `lines` lines of valid, varied experiments."""
    parts, count, i = [], 0, 0
    while count < lines:
        block = _EXPERIMENT.format(i=i, limit=16 + i % 50)  # >= 4 batches: iterations = 4
        parts.append(block)
        count += block.count("\n")
        i += 1
    return "".join(parts)


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_cli(repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of `expc check examples/quickstart.exp` in fresh processes."""
    cmd = [sys.executable, "-m", "expc", "check", "examples/quickstart.exp"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)  # warm the grammar cache
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), _child_cpu()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        wall.append(time.perf_counter() - start)
        cpu.append(_child_cpu() - start_cpu)
    return wall, cpu


def torch_imported_by_check() -> bool:
    code = ("import sys\nfrom expc.cli import main\ntry:\n    main(['check', 'examples/quickstart.exp'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def time_check(lines: int, repeats: int) -> tuple[list[float], list[float], int]:
    """Wall and CPU seconds of parsing + checking a generated spec of at least `lines`
    lines, in this process; and its actual line count."""
    from expc.spec.loader import check_file

    text = generated_spec(lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generated.exp"
        path.write_text(text)
        check_file(str(path))  # warm-up: grammar load, first imports
        wall, cpu = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            diags = check_file(str(path), check_model=True)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            if any(d.code != "data" for d in diags):  # the data path is relative to the repo
                raise AssertionError(f"generated spec has diagnostics: {diags[:3]}")
    return wall, cpu, text.count("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cli_wall, cli_cpu = time_cli(args.repeats)
    big_wall, big_cpu, lines = time_check(BIG_LINES, args.repeats)
    results = {
        "repeats": args.repeats,
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "cli_check_quickstart_wall_median_s": statistics.median(cli_wall),
        "cli_check_quickstart_cpu_median_s": statistics.median(cli_cpu),
        "cli_check_quickstart_target_s": TARGET_CLI_S,
        "big_spec_lines": lines,
        "big_spec_check_wall_median_s": statistics.median(big_wall),
        "big_spec_check_cpu_median_s": statistics.median(big_cpu),
        "big_spec_target_s": TARGET_BIG_S,
        "torch_imported_by_check": torch_imported_by_check(),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    log.info("load average %.1f on %d cores", results["load_average_1min"], results["cpu_count"])
    log.info("expc check examples/quickstart.exp: median wall %.3f s, CPU %.3f s (target < %.1f s)",
             results["cli_check_quickstart_wall_median_s"], results["cli_check_quickstart_cpu_median_s"],
             TARGET_CLI_S)
    log.info("parse + check a %d-line spec:       median wall %.3f s, CPU %.3f s (target < %.1f s)",
             lines, results["big_spec_check_wall_median_s"], results["big_spec_check_cpu_median_s"],
             TARGET_BIG_S)
    log.info("torch imported by `expc check`:      %s", results["torch_imported_by_check"])


if __name__ == "__main__":
    main()
