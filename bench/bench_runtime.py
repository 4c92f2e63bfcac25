"""`expc run` speed and memory against bare forward loops, side by side in one run (issue 5).

    .venv/bin/python bench/bench_runtime.py [--quick] [--parts throughput,memory,...]
                                            [--omp-wait-policy PASSIVE|ACTIVE|default]

Prints a table per part (through `logging`) and writes `bench/results_runtime.json` after
every part (`--quick`: `.cache/bench/runtime/work-quick/results_runtime.json`); a run of some
parts replaces those parts and keeps the others.

Model and data: a random Llama built by transformers (hidden 512, intermediate 1024, 8 layers,
8 heads, 4 KV heads, vocab 32000) saved once into `.cache/bench/runtime/`, and a `tokens`
jsonl file of random ids with lengths uniform in 8..256. The spec captures
`resid_out[*] { aggregate = mean(mask = attention) }`, batch size 8.

Parts:
1. throughput — `expc run` (a fresh subprocess each time) against bare loops in this process
   over the very batches expc runs (expc's own `load_data` + `plan_batches` + `collate`,
   collated before timing): the expc model's eager forward (with logits, and `forward_trunk`,
   which is all the pruned expc graph computes), transformers' forward of the same checkpoint
   (with logits, and its base model without `lm_head`), and expc's instrumented graph called
   in this process. expc is timed by its manifest's `timings.seconds.run` (the batch loop)
   and by the wall time of the whole command. The trunk forward and the instrumented graph
   are also timed in a fresh process without warm-up, as `expc run` runs (cold).
2. memory — peak RSS of one `expc run` (its own, from `os.wait4` in a small launcher process)
   less the size of its `results.safetensors`, at N and 10N samples, for `mean` and for
   `full` (contrast).
3. nproc — `expc run --nproc 2` (torchrun, 1 thread per rank) against 1 process with 2
   threads and with 1 thread.
4. compile — `compile = true` (torch.compile of the instrumented graph) against false, as
   `expc run` does it; compile_steady — in this process, eager against
   `torch.compile(graph, dynamic=True)`: compile cost, then per-batch time.
5. threads — 2 threads with libgomp's default wait policy, with OMP_WAIT_POLICY=PASSIVE, and
   1 thread. On this shared, oversubscribed machine libgomp's spinning wait made 2-thread
   runs several times slower than 1 thread, so every other part runs with PASSIVE
   (`--omp-wait-policy` changes that; the script re-executes itself to set it).
6. profile — cProfile of one `expc run examples/quickstart.exp`: where the time goes.

The machine is shared and noisy, so every comparison is paired: each repetition runs every
variant once, in an order rotated by one place per repetition, and the reported ratio is the
median over repetitions of the per-repetition ratio (min and max beside it). Torch runs on
2 threads (`torch.set_num_threads(2)` here, `OMP_NUM_THREADS=2` for the subprocesses) unless
a row says otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import torch

log = logging.getLogger("bench_runtime")

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache/bench/runtime"
RESULTS = REPO / "bench/results_runtime.json"
THREADS = 2
BATCH_SIZE = 8
MAX_LENGTH = 256
MIN_LENGTH = 8
THROUGHPUT_TARGET = 0.9  # expc tokens/s over the bare loop's
MEMORY_GROWTH_TARGET = 0.10  # peak RSS less results, 10x the data
LLAMA = dict(vocab_size=32000, hidden_size=512, intermediate_size=1024, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
             tie_word_embeddings=False, pad_token_id=0)
MEAN = "mean(mask = attention)"


@attrs.frozen(kw_only=True)
class Settings:
    """How much work each part does."""

    samples: int  # throughput, nproc and compile data
    repetitions: int
    memory_samples: tuple[int, int]  # N and 10N
    memory_max_length: int  # --set data.max_length for the memory runs
    compile_samples: int  # --set data.limit for the torch.compile runs
    compile_repetitions: int


FULL = Settings(samples=32, repetitions=4, memory_samples=(256, 2560), memory_max_length=16,
                compile_samples=16, compile_repetitions=1)
QUICK = Settings(samples=16, repetitions=3, memory_samples=(32, 320), memory_max_length=8,
                 compile_samples=8, compile_repetitions=1)


# ---- inputs ------------------------------------------------------------------------------

def ensure_checkpoint(folder: Path) -> Path:
    """The random Llama checkpoint, saved by transformers once and then reused."""
    if (folder / "config.json").is_file():
        return folder
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    model.save_pretrained(folder)
    return folder


def describe_model() -> str:
    """The random checkpoint's shape in words."""
    return (f"random Llama (hidden {LLAMA['hidden_size']}, {LLAMA['num_hidden_layers']} layers, "
            f"{LLAMA['num_attention_heads']} heads, {LLAMA['num_key_value_heads']} KV heads, "
            f"vocabulary {LLAMA['vocab_size']})")


def workspace(name: str) -> tuple[Path, Path]:
    """The random checkpoint (saved once) and the work folder `CACHE/name` (created)."""
    checkpoint = ensure_checkpoint(CACHE / "llama-h512-l8-kv4")
    work = CACHE / name
    work.mkdir(parents=True, exist_ok=True)
    return checkpoint, work


def write_tokens(path: Path, *, samples: int, seed: int = 0) -> Path:
    """`samples` lines of `{"input_ids": [...]}`, lengths uniform in MIN_LENGTH..MAX_LENGTH."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(MIN_LENGTH, MAX_LENGTH + 1, (samples,), generator=gen)
    lines = [json.dumps({"input_ids": torch.randint(1, LLAMA["vocab_size"], (int(n),),
                                                    generator=gen).tolist()})
             for n in lengths]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_spec(path: Path, *, model: Path, data: Path, out: Path, aggregate: str = MEAN,
               compile_graph: bool = False) -> Path:
    path.write_text(f"""\
experiment bench_runtime {{
    model   = "{model}"
    dtype   = float32
    device  = cpu
    seed    = 0
    compile = {str(compile_graph).lower()}

    data {{
        source     = tokens("{data}")
        batch_size = {BATCH_SIZE}
        max_length = {MAX_LENGTH}
    }}

    capture resid_out[*] {{ aggregate = {aggregate} }}

    output {{ dir = "{out}" }}
}}
""")
    return path


# ---- one `expc run` in a fresh process ---------------------------------------------------

@attrs.frozen(kw_only=True)
class ExpcRun:
    """What one `expc run` command cost."""

    wall: float  # seconds, the whole command (interpreter start to exit)
    seconds: Mapping[str, float]  # the manifest's timings.seconds (load, compile, run, total)
    tokens: int
    peak_rss_mib: float  # the launched process's own high-water mark (not its children's)
    results_mib: float  # size of results.safetensors
    graph_breaks: int  # distinct torch.compile graph breaks warned on stderr (compile = true)

    @property
    def run(self) -> float:
        return self.seconds["run"]


# Linux starts a forked child's peak RSS at its parent's current RSS (and keeps it across
# exec), so a child forked by this process, which holds two models, would report at least
# this process's size. Each command is therefore launched by this small interpreter, which
# forks it, waits for it with `wait4` (that child's own peak RSS) and times it.
MEASURE_PREFIX = "expc-bench-measured "
LAUNCHER = f"""\
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
measured = {{"wall": time.perf_counter() - start, "maxrss_kib": usage.ru_maxrss}}
sys.stderr.write("\\n{MEASURE_PREFIX}" + json.dumps(measured) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_expc(spec: Path, *, out: Path, threads: int, nproc: int = 1,
             overrides: Sequence[str] = (), profile_to: Path | None = None,
             environment: Mapping[str, str | None] | None = None) -> ExpcRun:
    """`expc run SPEC --out OUT --force --quiet` with `threads` torch threads per process;
    `environment` sets (or, with None, removes) variables for the command."""
    prefix = [sys.executable] + ([] if profile_to is None else
                                 ["-m", "cProfile", "-o", str(profile_to)])
    command = [*prefix, "-m", "expc", "run", str(spec), "--out", str(out), "--force", "--quiet",
               *(a for o in overrides for a in ("--set", o))]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for name, value in (environment or {}).items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    with tempfile.TemporaryFile() as stderr:
        done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=stderr, check=False)
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if done.returncode != 0:
        tail = errors.strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): " + "\n".join(tail))
    measured = json.loads(errors.rsplit(MEASURE_PREFIX, 1)[1].splitlines()[0])
    manifest = json.loads((out / "manifest.json").read_text())
    return ExpcRun(wall=measured["wall"], seconds=manifest["timings"]["seconds"],
                   tokens=manifest["data"]["tokens"],
                   peak_rss_mib=measured["maxrss_kib"] / 1024,
                   results_mib=(out / "results.safetensors").stat().st_size / 2**20,
                   graph_breaks=errors.count("Graph break: from user code"))


# ---- paired repetitions ------------------------------------------------------------------

def rotated(items: Sequence, shift: int) -> list:
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def interleaved(variants: Mapping[str, Callable[[], object]], *, repetitions: int
                ) -> dict[str, list]:
    """Every variant once per repetition, order rotated by one place per repetition."""
    outcomes: dict[str, list] = {name: [] for name in variants}
    for repetition in range(repetitions):
        for name in rotated(list(variants), repetition):
            outcomes[name].append(variants[name]())
            log.debug("rep %d %s done", repetition, name)
    return outcomes


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, float]:
    """Median, min and max over repetitions of numerator / denominator."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return run


# ---- part 1: throughput ------------------------------------------------------------------

Step = Callable[[torch.Tensor, torch.Tensor], object]


def loop_over(step: Step, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
              ) -> Callable[[], None]:
    """A pass of `step(input_ids, attention_mask)` over `batches` under inference mode."""
    def run() -> None:
        with torch.inference_mode():
            for ids, mask in batches:
                step(ids, mask)
    return run


def expc_batches(spec: Path) -> tuple[object, list[tuple[torch.Tensor, torch.Tensor]], int]:
    """The spec's experiment, expc's own padded batches of its data (`[B, S]` ids and mask
    each, as `expc run` collates them), and their real token count."""
    from expc.runtime.data.load import load_data
    from expc.runtime.data.batches import iter_batches, plan_batches
    from expc.spec import load as load_spec

    experiment = load_spec(spec)
    source = experiment.data.source
    data = load_data(kind=source.kind, path=source.path, max_length=experiment.data.max_length,
                     vocab_size=LLAMA["vocab_size"])
    plan = plan_batches(data.lengths, batch_size=experiment.data.batch_size)
    batches = [(b.input_ids, b.attention_mask)
               for b in iter_batches(data, plan, pad_token_id=LLAMA["pad_token_id"])]
    return experiment, batches, data.n_tokens


def graph_step(experiment, model, *, n_batches: int,
               wrap: Callable[[torch.nn.Module], Callable] = lambda graph: graph) -> Step:
    """One batch through expc's instrumented graph (`wrap`ped) feeding real aggregators."""
    from expc.compiler.pipeline import compile_plan
    from expc.compiler.plan import build_plan
    from expc.runtime.sinks import BatchContext, capture_sink
    from expc.runtime.state import build_states

    capture_plan = build_plan(experiment, n_layers=model.config.n_layers)
    context = BatchContext()
    states = build_states(capture_plan, model, total_batches=n_batches)
    graph = wrap(compile_plan(capture_plan, model, {key: capture_sink(state, context)
                                                    for key, state in states.items()}
                              ).graph_module)

    def step(ids: torch.Tensor, mask: torch.Tensor) -> None:
        context.set(attention_mask=mask, field_mask=None)
        graph(ids, mask)

    return step


def expc_steps(experiment, checkpoint: Path, *, n_batches: int) -> dict[str, Step]:
    """The expc model's eager forwards, and its instrumented graph feeding real aggregators."""
    from expc.models.loading import load_model

    model = load_model(checkpoint)
    return {
        "expc model forward (logits)": lambda ids, mask: model(ids, mask),
        "expc model forward_trunk": lambda ids, mask: model.forward_trunk(ids, mask),
        "expc graph in-process": graph_step(experiment, model, n_batches=n_batches),
    }


def hf_steps(checkpoint: Path) -> dict[str, Step]:
    """transformers' forward of the same checkpoint, with and without `lm_head`."""
    import transformers

    hf = transformers.LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return {
        "HF forward (logits)": lambda ids, mask: hf(input_ids=ids, attention_mask=mask),
        "HF base model (no lm_head)": lambda ids, mask: hf.model(input_ids=ids,
                                                                 attention_mask=mask),
    }


COLD = ("expc model forward_trunk", "expc graph in-process")  # also run in a fresh process


def cold_loop_seconds(step: str, *, spec: Path, checkpoint: Path) -> float:
    """Child side: one pass of `step` in this fresh process, no warm-up, like `expc run`."""
    torch.set_num_threads(THREADS)
    experiment, batches, _ = expc_batches(spec)
    run = loop_over(expc_steps(experiment, checkpoint, n_batches=len(batches))[step], batches)
    return timed(run)()


def run_cold(step: str, *, spec: Path, checkpoint: Path) -> float:
    """`cold_loop_seconds` in a fresh interpreter; the loop's seconds."""
    done = subprocess.run([sys.executable, __file__, "--cold-child", step, "--spec", str(spec),
                           "--checkpoint", str(checkpoint)], cwd=REPO, check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
    return json.loads(done.stdout.strip().splitlines()[-1])["loop_s"]


def part_throughput(work: Path, checkpoint: Path, settings: Settings) -> dict:
    data = write_tokens(work / "data.jsonl", samples=settings.samples)
    out = work / "run-throughput"
    spec = write_spec(work / "throughput.exp", model=checkpoint, data=data, out=out)
    experiment, batches, tokens = expc_batches(spec)
    steps = {**expc_steps(experiment, checkpoint, n_batches=len(batches)),
             **hf_steps(checkpoint)}
    loops = {name: loop_over(step, batches) for name, step in steps.items()}
    for name, step in steps.items():
        log.info("warm-up (2 batches): %s", name)
        loop_over(step, batches[:2])()
    runs: list[ExpcRun] = []

    def expc_run() -> float:
        runs.append(run_expc(spec, out=out, threads=THREADS))
        return runs[-1].run

    variants = {"expc run": expc_run, **{name: timed(fn) for name, fn in loops.items()}}
    for step in COLD:
        variants[f"{step}, fresh process"] = (
            lambda step=step: run_cold(step, spec=spec, checkpoint=checkpoint))
    log.info("throughput: %d variants x %d repetitions, %d tokens each", len(variants),
             settings.repetitions, tokens)
    times = interleaved(variants, repetitions=settings.repetitions)
    walls = [r.wall for r in runs]
    rows = {}
    for name in (name for name in variants if name != "expc run"):
        rows[name] = {
            "tokens_per_s": tokens / statistics.median(times[name]),
            "expc_run_over_this": paired(times[name], times["expc run"]),
            "expc_wall_over_this": paired(times[name], walls),
        }
    rows["expc run (manifest run)"] = {"tokens_per_s": tokens / statistics.median(times["expc run"])}
    rows["expc run (wall)"] = {"tokens_per_s": tokens / statistics.median(walls)}
    log.info("tok/s of expc run over tok/s of each bare loop: median [min-max] of paired "
             "ratios; target >= %.1f on the manifest's run time", THROUGHPUT_TARGET)
    log.info("%-42s %7s %22s %6s %22s", "variant", "tok/s", "expc run / this", "target",
             "expc wall / this")
    for name, row in rows.items():
        if "expc_run_over_this" in row:
            a, b = row["expc_run_over_this"], row["expc_wall_over_this"]
            row["meets_target"] = a["median"] >= THROUGHPUT_TARGET
            log.info("%-42s %7.0f %8.3f [%.3f-%.3f] %6s %8.3f [%.3f-%.3f]", name,
                     row["tokens_per_s"], a["median"], a["min"], a["max"],
                     "meets" if row["meets_target"] else "MISSES", b["median"], b["min"],
                     b["max"])
        else:
            log.info("%-42s %7.0f", name, row["tokens_per_s"])
    phases = {k: statistics.median(r.seconds[k] for r in runs)
              for k in ("load", "compile", "run", "total")}
    log.info("expc run phases (median s): %s; wall %.2f s",
             ", ".join(f"{k} {v:.2f}" for k, v in phases.items()), statistics.median(walls))
    return {"tokens": tokens, "samples": settings.samples, "repetitions": settings.repetitions,
            "rows": rows, "expc_phases_seconds": phases,
            "raw_seconds": {**times, "expc wall": walls}}


# ---- part 2: memory ---------------------------------------------------------------------

def memory_growth(small: Mapping[str, float], large: Mapping[str, float]) -> float:
    """Relative growth of peak RSS less the results' size from the small run to the large."""
    return large["peak_less_results_mib"] / small["peak_less_results_mib"] - 1


def part_memory(work: Path, checkpoint: Path, settings: Settings) -> dict:
    """Peak RSS less results at N and 10N samples, `mean` and `full`, each in a fresh process."""
    small, large = settings.memory_samples
    data = write_tokens(work / "memory.jsonl", samples=large, seed=1)
    rows = {}
    for aggregate, label in ((MEAN, "mean"), ("full", "full")):
        spec = write_spec(work / f"memory-{label}.exp", model=checkpoint, data=data,
                          out=work / f"run-memory-{label}", aggregate=aggregate)
        measured = {}
        for samples in (small, large):
            log.info("memory: %s over %d samples", label, samples)
            done = run_expc(spec, out=work / f"run-memory-{label}", threads=THREADS,
                            overrides=(f"data.limit={samples}",
                                       f"data.max_length={settings.memory_max_length}"))
            measured[samples] = {"peak_rss_mib": done.peak_rss_mib,
                                 "results_mib": done.results_mib,
                                 "peak_less_results_mib": done.peak_rss_mib - done.results_mib,
                                 "tokens": done.tokens, "wall_s": done.wall}
        rows[label] = {"runs": measured, "growth": memory_growth(measured[small], measured[large])}
    log.info("%-6s %8s %10s %10s %14s %10s %10s %14s %8s", "mode", "N", "peak MiB",
             "results", "peak-results", "10N", "peak MiB", "peak-results", "growth")
    for label, row in rows.items():
        a, b = row["runs"][small], row["runs"][large]
        log.info("%-6s %8d %10.1f %10.1f %14.1f %10d %10.1f %14.1f %7.1f%%", label, small,
                 a["peak_rss_mib"], a["results_mib"], a["peak_less_results_mib"], large,
                 b["peak_rss_mib"], b["peak_less_results_mib"], 100 * row["growth"])
    verdict = "meets" if rows["mean"]["growth"] < MEMORY_GROWTH_TARGET else "MISSES"
    log.info("mean: growth %.1f%% %s the target < %.0f%% (max_length %d)",
             100 * rows["mean"]["growth"], verdict, 100 * MEMORY_GROWTH_TARGET,
             settings.memory_max_length)
    return {"samples": [small, large], "max_length": settings.memory_max_length, "rows": rows,
            "target_growth": MEMORY_GROWTH_TARGET}


# ---- part 3: torchrun --------------------------------------------------------------------

def part_nproc(work: Path, checkpoint: Path, settings: Settings) -> dict:
    """`--nproc 2` (1 thread each) against one process with 2 threads and with 1 thread."""
    data = write_tokens(work / "data.jsonl", samples=settings.samples)
    out = work / "run-nproc"
    spec = write_spec(work / "nproc.exp", model=checkpoint, data=data, out=out)
    variants = {
        "1 process, 2 threads": lambda: run_expc(spec, out=out, threads=2),
        "1 process, 1 thread": lambda: run_expc(spec, out=out, threads=1),
        "--nproc 2, 1 thread each": lambda: run_expc(spec, out=out, threads=1, nproc=2),
    }
    log.info("nproc: %d variants x %d repetitions", len(variants), settings.repetitions)
    runs = interleaved(variants, repetitions=settings.repetitions)
    base = runs["1 process, 2 threads"]
    rows = {}
    log.info("%-26s %9s %9s %26s %26s", "variant", "run s", "wall s", "speed-up (run) vs 2thr",
             "speed-up (wall) vs 2thr")
    for name, done in runs.items():
        rows[name] = {
            "run_s": statistics.median(r.run for r in done),
            "wall_s": statistics.median(r.wall for r in done),
            "speedup_run": paired([r.run for r in base], [r.run for r in done]),
            "speedup_wall": paired([r.wall for r in base], [r.wall for r in done]),
        }
        a, b = rows[name]["speedup_run"], rows[name]["speedup_wall"]
        log.info("%-26s %9.2f %9.2f %10.3f [%.3f-%.3f] %10.3f [%.3f-%.3f]", name,
                 rows[name]["run_s"], rows[name]["wall_s"], a["median"], a["min"], a["max"],
                 b["median"], b["min"], b["max"])
    return {"samples": settings.samples, "tokens": base[0].tokens,
            "repetitions": settings.repetitions, "rows": rows}


# ---- part 4: torch.compile ---------------------------------------------------------------

def part_compile(work: Path, checkpoint: Path, settings: Settings) -> dict:
    """`compile = true` against false on a few batches: compile cost and per-run time."""
    data = write_tokens(work / "data.jsonl", samples=settings.samples)
    limit = (f"data.limit={settings.compile_samples}",)
    variants = {}
    for flag in (False, True):
        out = work / f"run-compile-{str(flag).lower()}"
        spec = write_spec(work / f"compile-{str(flag).lower()}.exp", model=checkpoint,
                          data=data, out=out, compile_graph=flag)
        variants[f"compile = {str(flag).lower()}"] = (
            lambda spec=spec, out=out: run_expc(spec, out=out, threads=THREADS, overrides=limit))
    log.info("compile: %d variants x %d repetitions, %d samples", len(variants),
             settings.compile_repetitions, settings.compile_samples)
    runs = interleaved(variants, repetitions=settings.compile_repetitions)
    base = runs["compile = false"]
    rows = {}
    log.info("%-16s %10s %10s %10s %22s %13s", "variant", "compile s", "run s", "wall s",
             "wall / compile=false", "graph breaks")
    for name, done in runs.items():
        rows[name] = {key: statistics.median(r.seconds[key] for r in done)
                      for key in ("compile", "run")}
        rows[name]["wall_s"] = statistics.median(r.wall for r in done)
        rows[name]["graph_breaks"] = max(r.graph_breaks for r in done)
        rows[name]["wall_over_eager"] = paired([r.wall for r in done], [r.wall for r in base])
        rows[name]["run_over_eager"] = paired([r.run for r in done], [r.run for r in base])
        ratio = rows[name]["wall_over_eager"]
        log.info("%-16s %10.2f %10.2f %10.2f %8.2f [%.2f-%.2f] %13d", name,
                 rows[name]["compile"], rows[name]["run"], rows[name]["wall_s"],
                 ratio["median"], ratio["min"], ratio["max"], rows[name]["graph_breaks"])
    return {"samples": settings.compile_samples, "batches": -(-settings.compile_samples
                                                              // BATCH_SIZE),
            "repetitions": settings.compile_repetitions, "rows": rows}


def part_compile_steady(work: Path, checkpoint: Path, settings: Settings) -> dict:
    """In this process: the instrumented graph eager against `torch.compile(graph,
    dynamic=True)` (one compile for every sequence length), first call and then per batch."""
    from expc.models.loading import load_model

    data = write_tokens(work / "data.jsonl", samples=settings.samples)
    spec = write_spec(work / "compile-steady.exp", model=checkpoint, data=data,
                      out=work / "run-compile-steady")
    experiment, batches, tokens = expc_batches(spec)
    model = load_model(checkpoint)
    steps = {"eager": graph_step(experiment, model, n_batches=len(batches)),
             "torch.compile(dynamic=True)": graph_step(
                 experiment, model, n_batches=len(batches),
                 wrap=lambda graph: torch.compile(graph, dynamic=True))}
    first = {name: timed(loop_over(step, batches[:1]))() for name, step in steps.items()}
    log.info("compile steady: first batch eager %.2f s, compiled %.2f s (compiles here)",
             first["eager"], first["torch.compile(dynamic=True)"])
    per_batch: dict[str, list[float]] = {name: [] for name in steps}
    for repetition in range(settings.repetitions):
        for ids, mask in batches:
            for name in rotated(list(steps), repetition):
                per_batch[name].append(timed(loop_over(steps[name], [(ids, mask)]))())
    ratio = paired(per_batch["torch.compile(dynamic=True)"], per_batch["eager"])
    saved = statistics.median(e - c for e, c in zip(per_batch["eager"],
                                                    per_batch["torch.compile(dynamic=True)"]))
    compile_cost = first["torch.compile(dynamic=True)"] - first["eager"]
    log.info("compile steady: compiled / eager per batch %.3f [%.3f-%.3f] over %d batches; "
             "saves %.3f s per batch; compile costs %.1f s, so pays after ~%.0f batches of "
             "this size", ratio["median"], ratio["min"], ratio["max"], len(per_batch["eager"]),
             saved, compile_cost, compile_cost / saved if saved > 0 else float("inf"))
    return {"first_batch_s": first, "compiled_over_eager_per_batch": ratio,
            "median_saved_s_per_batch": saved, "compile_cost_s": compile_cost,
            "tokens": tokens, "batches": len(batches), "repetitions": settings.repetitions,
            "per_batch_s": per_batch}


# ---- part 5: OpenMP threads on a shared machine ------------------------------------------

def part_threads(work: Path, checkpoint: Path, settings: Settings) -> dict:
    """2 threads with libgomp's default (spinning) wait, 2 threads with OMP_WAIT_POLICY=PASSIVE,
    and 1 thread: the run loop of the bench spec (a few batches) and of the quickstart."""
    data = write_tokens(work / "data.jsonl", samples=settings.samples)
    specs = {
        "bench model": (write_spec(work / "threads.exp", model=checkpoint, data=data,
                                   out=work / "run-threads"), work / "run-threads",
                        (f"data.limit={settings.compile_samples}",)),
        "quickstart": (REPO / "examples/quickstart.exp", work / "run-threads-quickstart", ()),
    }
    settings_by_name = {
        "2 threads, libgomp default wait": (2, {"OMP_WAIT_POLICY": None}),
        "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
        "1 thread": (1, {}),
    }
    report = {}
    for workload, (spec, out, overrides) in specs.items():
        variants = {
            name: (lambda threads=threads, environment=environment: run_expc(
                spec, out=out, threads=threads, overrides=overrides, environment=environment))
            for name, (threads, environment) in settings_by_name.items()}
        log.info("threads: %s, %d variants x %d repetitions", workload, len(variants),
                 settings.repetitions)
        runs = interleaved(variants, repetitions=settings.repetitions)
        base = runs["2 threads, libgomp default wait"]
        rows = {}
        log.info("%-36s %9s %28s", f"{workload}: variant", "run s", "run / 2 threads default")
        for name, done in runs.items():
            rows[name] = {"run_s": statistics.median(r.run for r in done),
                          "run_over_default": paired([r.run for r in done],
                                                     [r.run for r in base])}
            ratio = rows[name]["run_over_default"]
            log.info("%-36s %9.3f %10.3f [%.3f-%.3f]", name, rows[name]["run_s"],
                     ratio["median"], ratio["min"], ratio["max"])
        report[workload] = {"overrides": list(overrides), "rows": rows}
    return report


# ---- part 6: profile of the quickstart ---------------------------------------------------

PROFILED = {  # label -> (file suffix, function name) in the cProfile stats
    "interpreter + CLI start": None,
    "import expc.runtime.execute (torch...)": ("runtime/execute.py", "<module>"),
    "spec load + checks": ("spec/__init__.py", "load"),
    "_prepare (load + compile)": ("runtime/execute.py", "_prepare"),
    "  load_model": ("models/loading.py", "load_model"),
    "  load_tokenizer": ("models/tokenizer.py", "load_tokenizer"),
    "  load_data": ("runtime/data/load.py", "load_data"),
    "  compile_plan (trace + passes)": ("compiler/pipeline.py", "compile_plan"),
    "  build_states": ("runtime/state.py", "build_states"),
    "_execute (_prepare + loop + finish)": ("runtime/execute.py", "_execute"),
    "  graph forward (per batch)": ("<eval_with_key>", "forward"),
    "  sinks (capture + metric)": ("runtime/sinks.py", "sink"),
    "  aggregator add": ("runtime/aggregate/base.py", "add"),
    "  importance update": ("runtime/importance/base.py", "update"),
    "  collate batches": ("runtime/data/batches.py", "collate"),
    "  save_checkpoint": ("runtime/checkpoint.py", "save_checkpoint"),
    "  progress": ("runtime/progress.py", "advance"),
    "  finish (merge, results, manifest)": ("runtime/execute.py", "_finish"),
}


def _summed(stats: pstats.Stats, suffix: str, name: str) -> tuple[int, float, float]:
    """(calls, total own seconds, cumulative seconds) of every function `name` in `suffix`."""
    calls, own, cumulative = 0, 0.0, 0.0
    for (filename, _, function), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        if function == name and (filename.endswith(suffix) or filename.startswith(suffix)):
            calls, own, cumulative = calls + ncalls, own + tottime, cumulative + cumtime
    return calls, own, cumulative


def _python_own_seconds(stats: pstats.Stats, folders: Sequence[str]) -> float:
    """Time spent in the Python code of expc's `folders` themselves (not in torch ops)."""
    roots = tuple(f"{REPO / folder}/" for folder in folders)
    return sum(tottime for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items()
               if filename.startswith(roots))


def part_profile(work: Path, checkpoint: Path, settings: Settings) -> dict:
    """cProfile one `expc run examples/quickstart.exp`; also one unprofiled run for scale."""
    spec = REPO / "examples/quickstart.exp"
    out = work / "run-quickstart"
    plain = run_expc(spec, out=out, threads=THREADS)
    profile = work / "quickstart.prof"
    profiled = run_expc(spec, out=out, threads=THREADS, profile_to=profile)
    stats = pstats.Stats(str(profile))
    total = stats.total_tt
    batches = json.loads((out / "manifest.json").read_text())["data"]["batches"]
    rows = {}
    for label, where in PROFILED.items():
        if where is None:
            continue
        calls, own, cumulative = _summed(stats, *where)
        rows[label] = {"calls": calls, "cumulative_s": cumulative, "own_s": own}
    cli_total = _summed(stats, "cli/run.py", "command")[2]
    rows["interpreter + CLI start"] = {"calls": 1, "cumulative_s": total - cli_total,
                                       "own_s": 0.0}
    tap_python = _python_own_seconds(stats, ("runtime", "compiler"))
    log.info("quickstart under cProfile: %.2f s (%.2f s without the profiler), %d batches",
             total, plain.wall, batches)
    log.info("%-38s %7s %12s %12s %14s", "where", "calls", "cumulative s", "own s",
             "ms per batch")
    for label in PROFILED:
        row = rows[label]
        log.info("%-38s %7d %12.3f %12.3f %14.2f", label, row["calls"], row["cumulative_s"],
                 row["own_s"], 1000 * row["cumulative_s"] / batches)
    log.info("own Python time in expc runtime/ + compiler/ code: %.3f s (%.1f ms per batch)",
             tap_python, 1000 * tap_python / batches)
    return {"profiled_total_s": total, "profiled_wall_s": profiled.wall,
            "unprofiled_wall_s": plain.wall,
            "unprofiled_seconds": dict(plain.seconds), "batches": batches, "rows": rows,
            "runtime_compiler_python_own_s": tap_python,
            "top_cumulative": _top(stats, 25)}


def _top(stats: pstats.Stats, count: int) -> list[dict]:
    """The `count` functions with the most cumulative time."""
    ranked = sorted(stats.stats.items(), key=lambda item: item[1][3], reverse=True)[:count]
    return [{"function": f"{Path(filename).name}:{line}({name})", "calls": ncalls,
             "own_s": tottime, "cumulative_s": cumtime}
            for (filename, line, name), (_, ncalls, tottime, cumtime, _) in ranked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="less data, fewer repetitions")
    parser.add_argument("--parts",
                        default="throughput,memory,nproc,compile,compile_steady,threads,profile")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        choices=("PASSIVE", "ACTIVE", "default"),
                        help="OMP_WAIT_POLICY for this process and every command it runs "
                             "(default PASSIVE: see the `threads` part)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--cold-child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_child:
        seconds = cold_loop_seconds(args.cold_child, spec=args.spec, checkpoint=args.checkpoint)
        print(json.dumps({"loop_s": seconds}))
        return 0
    policy = None if args.omp_wait_policy == "default" else args.omp_wait_policy
    if os.environ.get("OMP_WAIT_POLICY") != policy:  # libgomp reads it once, at torch import
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        env.update({} if policy is None else {"OMP_WAIT_POLICY": policy})
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
    torch.set_num_threads(THREADS)
    settings = QUICK if args.quick else FULL
    checkpoint, work = workspace("work-quick" if args.quick else "work")
    report = {"quick": args.quick, "settings": attrs.asdict(settings), "threads": THREADS,
              "omp_wait_policy": args.omp_wait_policy, "command": " ".join(sys.argv),
              "parts": {}}
    results = work / RESULTS.name if args.quick else RESULTS
    if results.is_file():  # keep the parts not run this time
        report["parts"] = json.loads(results.read_text()).get("parts", {})
    parts = {"throughput": part_throughput, "memory": part_memory, "nproc": part_nproc,
             "compile": part_compile, "compile_steady": part_compile_steady,
             "threads": part_threads, "profile": part_profile}
    failed = []
    for name in args.parts.split(","):
        started = time.perf_counter()
        try:
            report["parts"][name] = parts[name](work, checkpoint, settings)
        except Exception as exc:  # one broken part is a finding; the others still run
            log.exception("part %s failed", name)
            report["parts"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        report["parts"][name]["bench_seconds"] = time.perf_counter() - started
        results.write_text(json.dumps(report, indent=2) + "\n")  # after every part
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
