"""Study `selective`: a run that reads layer 1 of a 32-layer model pays for two layers.

A random 32-layer Llama checkpoint (small hidden size, bf16 shards like a real one, built
once under `.cache/bench` by `study_prune.build_checkpoint`) runs the same token data twice
per repetition, in alternating order, as whole `expc run` processes (imports included):
once capturing `resid_out[1]` (the plan needs layers 0..1: `Plan.layers_needed`) and once
capturing `resid_out[31]` (every layer). Each run's manifest splits its time into load
(model + data), compile (trace + passes) and run; what the process took beyond that is
imports, the spec and writing the folder, next to a process that only imports torch. In this
process: the selective spec's build (plan, meta model, weights) and compile (trace, passes,
one code generation), which the issue bounds at 0.3 s together.
"""

from __future__ import annotations

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
from bench.study_prune import build_checkpoint
from bench.workloads import CACHE_DIR

log = logging.getLogger("bench.study_selective")

NAME = "selective"
DESCRIPTION = ("A `resid_out[1]` capture of a 32-layer random Llama against a `resid_out[-1]` "
               "capture: whole `expc run` processes (imports included), and the selective "
               "spec's build and compile in-process")
SHAPE = (128, 512, 32, 2048, 4, 2)  # hidden, intermediate, layers, vocabulary, heads, KV heads
DATA = {"full": (256, 128), "quick": (128, 128)}  # samples, tokens each
BATCH_SIZE = 32
REPEATS = {"full": 3, "quick": 2}
PROCESS_RATIO, COMPILE_SECONDS = 0.25, 0.3  # the bounds
SPECS = {"selective": "resid_out[1]", "full model": "resid_out[-1]"}


def write_inputs(work: Path, checkpoint: Path, samples: int, length: int) -> dict[str, Path]:
    """Token data and one spec per capture of `SPECS`."""
    rng = random.Random(0)
    data = work / "ids.jsonl"
    data.write_text("".join(json.dumps({"ids": [rng.randrange(4, SHAPE[3]) for _ in range(length)]})
                            + "\n" for _ in range(samples)))
    specs = {}
    for label, site in SPECS.items():
        name = label.replace(" ", "_")
        specs[label] = work / f"{name}.exp"
        specs[label].write_text(f"""experiment {name} {{
    model = "{checkpoint}"
    dtype = float32
    device = cpu
    data {{ source = tokens("{data}", field = "ids")  batch_size = {BATCH_SIZE} }}
    capture {site} {{ aggregate = mean }}
    output {{ dir = "{work / name}" }}
}}
""")
    return specs


def run_process(spec: Path) -> dict[str, float]:
    """Wall seconds of a whole `expc run` process and its manifest's phases."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "expc", "run", str(spec), "--force", "-q"],
                   check=True, capture_output=True)
    wall = time.perf_counter() - started
    out = spec.with_suffix("")
    seconds = json.loads((out / "manifest.json").read_text())["timings"]["seconds"]
    return {"process": wall, **{k: seconds[k] for k in ("load", "compile", "run", "total")}}


def import_seconds(module: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - started


def build_and_compile(spec: Path) -> dict[str, float]:
    """This process's time to plan and build the model with its weights, then to compile."""
    from expc import spec as spec_api
    from expc.compiler.pipeline import compile_plan
    from expc.compiler.plan import build_plan
    from expc.models.loading import load_model, read_model_config

    experiment = spec_api.load(spec)
    started = time.perf_counter()
    plan = build_plan(experiment, n_layers=read_model_config(experiment.model.path).n_layers)
    model = load_model(experiment.model.path, n_layers_built=plan.layers_needed)
    built = time.perf_counter()
    compile_plan(plan, model)
    return {"build": built - started, "compile": time.perf_counter() - built,
            "layers_built": model.n_layers_built}


def measure(*, quick: bool) -> StudyResult:
    mode = "quick" if quick else "full"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    checkpoint = build_checkpoint(SHAPE, CACHE_DIR / f"selective-llama-{SHAPE[2]}x{SHAPE[0]}")
    samples, length = DATA[mode]
    runs: dict[str, list[dict]] = {label: [] for label in SPECS}
    imports, inproc = [], []
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as folder:
        specs = write_inputs(Path(folder), checkpoint, samples, length)
        build_and_compile(specs["selective"])  # warm: the first call pays imports
        for rep in range(REPEATS[mode]):
            order = list(SPECS) if rep % 2 == 0 else list(reversed(SPECS))
            for label in order:
                runs[label].append(run_process(specs[label]))
            imports.append(import_seconds("torch"))
            inproc.append(build_and_compile(specs["selective"]))
            log.info("rep %d: %s", rep, {k: round(v[-1]["process"], 2) for k, v in runs.items()})
    med = {label: {k: statistics.median(r[k] for r in found) for k in found[0]}
           for label, found in runs.items()}
    ratios = [s["process"] / f["process"] for s, f in zip(runs["selective"], runs["full model"])]
    ratio = statistics.median(ratios)
    torch_import = statistics.median(imports)
    build = statistics.median(r["build"] for r in inproc)
    compile_s = statistics.median(r["compile"] for r in inproc)
    rows = []
    for label, m in med.items():
        rest = m["process"] - m["total"]
        rows.append((f"`{SPECS[label]}` ({label})", f"{m['process']:.2f} s", f"{m['load']:.2f} s",
                     f"{m['compile']:.2f} s", f"{m['run']:.2f} s", f"{rest:.2f} s"))
    rows.append(("`python -c 'import torch'`", f"{torch_import:.2f} s", "—", "—", "—", "—"))
    hidden, inter, layers, vocab, heads, kv = SHAPE
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok",
        note=(f"selective / full whole-process: median {ratio:.2f}× (per repetition "
              f"{', '.join(f'{r:.2f}' for r in ratios)}); in-process, the selective spec builds "
              f"{inproc[-1]['layers_built']} of {layers} layers: plan + build + weights "
              f"{build:.3f} s, compile {compile_s:.3f} s"),
        settings=(f"random Llama: {layers} layers, hidden {hidden}, intermediate {inter}, "
                  f"vocabulary {vocab}, {heads} heads ({kv} KV), bf16 shards read as float32; "
                  f"{samples} samples of {length} tokens, batch {BATCH_SIZE}, `aggregate = mean`; "
                  f"{REPEATS[mode]} repetitions in alternating order, medians"),
        columns=("spec", "whole process", "load (model + data)", "compile", "run",
                 "rest (imports, spec, writing)"),
        rows=tuple(rows),
        raw={"runs": runs, "ratios": ratios, "torch_import_s": imports, "in_process": inproc},
        verdicts=(
            StudyVerdict(target=f"`resid_out[1]` of {layers} layers, whole process ≤ "
                                f"{PROCESS_RATIO}× the full-model run",
                         measured=f"{ratio:.2f}× ({med['selective']['process']:.2f} s vs "
                                  f"{med['full model']['process']:.2f} s; torch's import alone "
                                  f"{torch_import:.2f} s)",
                         met=ratio <= PROCESS_RATIO),
            StudyVerdict(target=f"build + compile of that spec ≤ {COMPILE_SECONDS} s",
                         measured=f"{build + compile_s:.2f} s (build with weights {build:.2f} s, "
                                  f"trace + passes {compile_s:.2f} s)",
                         met=build + compile_s <= COMPILE_SECONDS)))
