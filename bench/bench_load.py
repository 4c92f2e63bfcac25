"""Peak memory while loading a checkpoint, against its size on disk (target: at most 1.2x).

The loader builds the model on the `meta` device and reads one tensor at a time, so the
weights should never sit in memory twice. Each measurement runs in a fresh Python process:
it imports expc, resets the kernel's peak-RSS counter (`/proc/self/clear_refs`), loads the
checkpoint with `expc.models.loading.load_model`, then reads every parameter (they are views
of the file's memory map, paged in on first use), and reports how far the peak resident set
rose above the level before loading, right after loading and once every weight is in. A
tiny built-in model is loaded first, so one-time import costs (reported as "warm-up") are
not charged to the checkpoint. Checkpoints: a random Llama (hidden 512, 8 layers)
saved once by `transformers`, single-file and sharded, plus the trained all-MiniLM-L6-v2
when `scripts/fetch_minilm.py` has put it in `.cache/models/`.

    .venv/bin/python bench/bench_load.py [--cache .cache/bench-load] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("bench_load")

REPO = Path(__file__).resolve().parent.parent
MINILM = REPO / ".cache/models/all-MiniLM-L6-v2"
TARGET_RATIO = 1.2
LLAMA = dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
             tie_word_embeddings=False)


def ensure_llama(folder: Path, *, max_shard_size: str | None) -> Path:
    """A random Llama checkpoint saved by transformers (built once, then reused)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(folder, **kwargs)
    return folder


def size_on_disk(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure_in_this_process(folder: str, dtype: str) -> dict:
    """Child side: load `folder` as `dtype` and report the RSS rise it caused, in bytes."""
    import torch

    from expc.models.loading import load_model

    torch.set_num_threads(1)
    # One-time cost, independent of the checkpoint: the first model built pulls in lazy
    # imports (a few MB). Pay it on a tiny model, then measure.
    warm_start = _status_kib("VmRSS")
    load_model("builtin:tiny-llama")
    warm_up = (_status_kib("VmRSS") - warm_start) * 1024
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    model = load_model(folder, dtype=dtype)
    seconds = time.perf_counter() - start
    load_peak = _status_kib("VmHWM")
    # Parameters are views of the file's memory map: read every byte so all pages are in.
    checksum = sum(float(p.detach().sum()) for p in model.parameters())
    touched_peak = _status_kib("VmHWM")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"load_peak_rise": (load_peak - before) * 1024,
            "peak_rise": (touched_peak - before) * 1024,
            "param_bytes": params, "seconds": seconds, "checksum": checksum,
            "warm_up": warm_up}


def measure(folder: Path, dtype: str) -> dict:
    """Run `measure_in_this_process` in a fresh interpreter (clean heap, clean peak)."""
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), "--dtype", dtype],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench-load")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype to load as (bfloat16 casts every tensor on load)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_in_this_process(args.child, args.dtype)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folders = {
        "llama h512 l8 (single file)": ensure_llama(args.cache / "llama-single", max_shard_size=None),
        "llama h512 l8 (sharded, 50MB)": ensure_llama(args.cache / "llama-sharded", max_shard_size="50MB"),
    }
    if (MINILM / "config.json").is_file():
        folders["all-MiniLM-L6-v2 (trained BERT)"] = MINILM
    else:
        log.info("MiniLM not fetched; run scripts/fetch_minilm.py to include it")
    worst = 0.0
    log.info("%-34s %9s %13s %13s %7s %7s %10s", "checkpoint", "disk MB", "load peak MB",
             "all-in peak MB", "ratio", "load s", "warm-up MB")
    for name, folder in folders.items():
        disk, result = size_on_disk(folder), measure(folder, args.dtype)
        ratio = result["peak_rise"] / disk
        worst = max(worst, ratio)
        log.info("%-34s %9.1f %13.1f %13.1f %7.2f %7.2f %10.1f", name, disk / 2**20,
                 result["load_peak_rise"] / 2**20, result["peak_rise"] / 2**20, ratio,
                 result["seconds"], result["warm_up"] / 2**20)
    verdict = "meets" if worst <= TARGET_RATIO else "MISSES"
    log.info("worst peak/disk ratio %.2f %s the target %.1fx", worst, verdict, TARGET_RATIO)
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
