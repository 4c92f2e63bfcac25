"""Study `streaming`: a sharded `full` capture keeps memory flat and writes at the disk's speed.

`full` captures of every layer's `resid_out` on `builtin:tiny-llama` (4 layers of 64 floats:
1 KiB of rows per token, far more data than compute) over N and 10N samples of long token
sequences, with a small `output { shard_size }` so that the rows stream to shards
(`runtime/results_writer.py`). Each run is a fresh `expc run` process, launched by
`bench_runtime`'s launcher, which reads its own peak RSS (`wait4`): it must grow < 10% from N
to 10N. Shards are 64 MB, as large as a real run's are small (the default is 2 GB), and N
already cuts several, so memory is at its plateau in both runs. Inside the run (this
module's `--probe`), every shard write (`save_safetensors_atomic`: temporary file, fsync,
rename) and every folder fsync the writer does once per flush is timed; write throughput is
the shards' bytes over those seconds. The disk's sequential speed is measured right after
each run by the same functions writing one file of the same bytes (median of three), so
both have the same flush semantics; the target is 80% of it. The same bytes in as many
files as the run wrote shards (each fsynced, the folder once), with no model running, tell
the cost of files apart from the cost of writing beside the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import StudyResult, StudyVerdict
from bench.workloads import CACHE_DIR

log = logging.getLogger("bench.study_streaming")

NAME = "streaming"
DESCRIPTION = ("`full` captures of every layer's `resid_out` streamed to shards: peak RSS of "
               "whole `expc run` processes at N and 10N samples, and shard write throughput "
               "against the disk's sequential write speed")
MODEL = "builtin:tiny-llama"
DATA = {"full": (384, 512), "quick": (16, 256)}  # N samples, tokens each (10N in the large run)
SHARD_SIZE = {"full": "64MB", "quick": "1MB"}  # N's run cuts several: memory at its plateau
BATCH_SIZE = 8
DISK_REPEATS = 3  # the disk's speed: the median of this many writes after each run
GROWTH_TARGET, THROUGHPUT_TARGET = 0.10, 0.80  # the bounds
MIB = 2**20


def write_inputs(work: Path, *, samples: int, length: int, shard_size: str) -> Path:
    """Random byte-token data of `samples` × `length` and the spec capturing it all `full`."""
    rng = random.Random(0)
    data = work / "ids.jsonl"
    data.write_text("".join(json.dumps({"ids": [rng.randrange(256) for _ in range(length)]})
                            + "\n" for _ in range(samples)))
    spec = work / "streaming.exp"
    spec.write_text(f"""experiment streaming {{
    model = "{MODEL}"
    dtype = float32
    device = cpu
    data {{
        source = tokens("{data}", field = "ids")
        batch_size = {BATCH_SIZE}
        max_length = {length}
    }}
    capture resid_out[*] {{ aggregate = full }}
    output {{ dir = "{work / 'run'}"  shard_size = "{shard_size}" }}
}}
""")
    return spec


def probe(spec: Path, writes_to: Path, *, overrides: list[str]) -> None:
    """`expc run SPEC --set ...` in this process, each results write timed into `writes_to`
    (JSON)."""
    from expc.cli import cli
    from expc.runtime import results_writer, store

    writes: list[dict] = []

    def timed(save):
        def save_timed(path, tensors, metadata=None, **how):
            started = time.perf_counter()
            save(path, tensors, metadata, **how)
            writes.append({"file": Path(path).name, "seconds": time.perf_counter() - started})
        return save_timed

    for module in (results_writer, store):
        module.save_safetensors_atomic = timed(module.save_safetensors_atomic)
    sync = results_writer.fsync_folder

    def sync_timed(folder):
        started = time.perf_counter()
        sync(folder)
        writes.append({"file": None, "seconds": time.perf_counter() - started})

    results_writer.fsync_folder = sync_timed
    try:
        cli.main(["run", str(spec), "--force", "--quiet",
                  *(arg for value in overrides for arg in ("--set", value))],
                 standalone_mode=False)
    finally:
        writes_to.write_text(json.dumps(writes))


def run_measured(spec: Path, samples: int) -> dict:
    """One fresh `expc run` over the first `samples`: peak RSS, shard bytes and write time."""
    from bench.bench_runtime import LAUNCHER, MEASURE_PREFIX, REPO
    from expc.spec.run_format import SHARD_PATTERN

    writes_to = spec.parent / "writes.json"
    command = [sys.executable, "-m", "bench.study_streaming", "--probe", str(spec),
               str(writes_to), "--set", f"data.limit={samples}"]
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=REPO,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): "
                           + "\n".join(done.stderr.strip().splitlines()[-5:]))
    measured = json.loads(done.stderr.rsplit(MEASURE_PREFIX, 1)[1].splitlines()[0])
    out = spec.parent / "run"
    shards = sorted(out.glob(SHARD_PATTERN))
    writes = json.loads(writes_to.read_text())
    if not shards or len([w for w in writes if w["file"]]) != len(shards):
        raise RuntimeError(f"{len(shards)} shards but {len(writes)} results writes in {out}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"peak_rss_mib": measured["maxrss_kib"] / 1024, "wall_s": measured["wall"],
            "run_s": manifest["timings"]["seconds"]["run"], "tokens": manifest["data"]["tokens"],
            "shards": len(shards), "shard_bytes": sum(p.stat().st_size for p in shards),
            "write_s": sum(w["seconds"] for w in writes),
            "write_s_each": [w["seconds"] for w in writes]}


def disk_seconds(folder: Path, size: int, *, files: int = 1) -> list[float]:
    """Seconds to write `size` bytes in `files` safetensors files as the run writes its
    shards (each fsynced, the folder once), `DISK_REPEATS` times (this shared disk's speed
    varies from write to write)."""
    import torch

    from expc.runtime.atomic import fsync_folder
    from expc.runtime.atomic_tensors import save_safetensors_atomic

    tensor = torch.ones(size // 4 // files, dtype=torch.float32)  # touched before the clock
    seconds = []
    for _ in range(DISK_REPEATS):
        started = time.perf_counter()
        for number in range(files):
            save_safetensors_atomic(folder / f"disk-{number}.safetensors", {"bytes": tensor},
                                    sync_folder=False)
        fsync_folder(folder)
        seconds.append(time.perf_counter() - started)
        for number in range(files):
            (folder / f"disk-{number}.safetensors").unlink()
    return seconds


def judged(runs: dict[int, dict]) -> dict:
    """Growth of peak RSS from N to 10N and each run's write throughput against the disk's."""
    small, large = (runs[count] for count in sorted(runs))
    for run in runs.values():
        run["write_mib_s"] = run["shard_bytes"] / MIB / run["write_s"]
        run["disk_mib_s"] = run["shard_bytes"] / MIB / run["disk_s"]
        run["of_disk"] = run["write_mib_s"] / run["disk_mib_s"]
        run["disk_in_shards_mib_s"] = run["shard_bytes"] / MIB / run["disk_in_shards_s"]
    return {"growth": large["peak_rss_mib"] / small["peak_rss_mib"] - 1,
            "of_disk": large["of_disk"]}


def verdicts(runs: dict[int, dict], found: dict) -> tuple[StudyVerdict, ...]:
    small, large = sorted(runs)
    return (
        StudyVerdict(target=f"`full` of every layer, streamed: peak RSS grows "
                            f"< {GROWTH_TARGET:.0%} from N to 10N samples",
                     measured=(f"{found['growth']:+.1%} ({runs[small]['peak_rss_mib']:.0f} → "
                               f"{runs[large]['peak_rss_mib']:.0f} MiB, {small} → {large} "
                               "samples)"),
                     met=found["growth"] < GROWTH_TARGET),
        StudyVerdict(target=f"shard write throughput ≥ {THROUGHPUT_TARGET:.0%} of the disk's "
                            "sequential write speed (cheap model, 10N run)",
                     measured=(f"{found['of_disk']:.0%} ({runs[large]['write_mib_s']:.0f} of "
                               f"{runs[large]['disk_mib_s']:.0f} MiB/s)"),
                     met=found["of_disk"] >= THROUGHPUT_TARGET))


def row_cells(samples: int, run: dict) -> tuple[str, ...]:
    return (f"{samples:,}", f"{run['tokens']:,}", f"{run['peak_rss_mib']:.0f} MiB",
            f"{run['shards']} × {run['shard_bytes'] / run['shards'] / MIB:.1f} MiB",
            f"{run['run_s']:.2f} s", f"{run['write_s']:.2f} s",
            f"{run['write_mib_s']:.0f} MiB/s", f"{run['disk_mib_s']:.0f} MiB/s",
            f"{run['disk_in_shards_mib_s']:.0f} MiB/s", f"{run['of_disk']:.0%}")


def measure(*, quick: bool) -> StudyResult:
    mode = "quick" if quick else "full"
    samples, length = DATA[mode]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    runs: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as folder:
        spec = write_inputs(Path(folder), samples=10 * samples, length=length,
                            shard_size=SHARD_SIZE[mode])
        for count in (samples, 10 * samples):
            run = run_measured(spec, count)
            run["disk_s_each"] = disk_seconds(Path(folder), run["shard_bytes"])
            run["disk_s"] = statistics.median(run["disk_s_each"])
            run["disk_in_shards_s"] = statistics.median(
                disk_seconds(Path(folder), run["shard_bytes"], files=run["shards"]))
            runs[count] = run
            log.info("%d samples: %s", count, run)
    found = judged(runs)
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok",
        settings=(f"`{MODEL}` (4 layers, hidden 64), `capture resid_out[*] {{ aggregate = full }}`"
                  f" (1 KiB of float32 rows per token), N = {samples} and 10N = {10 * samples} "
                  f"samples of {length} random byte tokens, batch {BATCH_SIZE}, "
                  f"`shard_size = \"{SHARD_SIZE[mode]}\"`; one fresh `expc run` per row; the "
                  "disk: one `save_safetensors_atomic` file of the same bytes (fsync, rename, "
                  f"folder fsync), median of {DISK_REPEATS} after each run"),
        columns=("samples", "tokens", "peak RSS", "shards", "batch loop", "writing shards",
                 "write throughput", "disk sequential", "disk, shard-sized files", "of disk"),
        rows=tuple(row_cells(count, run) for count, run in runs.items()),
        raw={"runs": runs, **found}, verdicts=verdicts(runs, found))


def main() -> None:
    parser = argparse.ArgumentParser(description="one timed `expc run` (the study's probe)")
    parser.add_argument("--probe", nargs=2, metavar=("SPEC", "WRITES_JSON"), required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    spec, writes_to = (Path(p) for p in args.probe)
    probe(spec, writes_to, overrides=args.overrides)


if __name__ == "__main__":
    main()
