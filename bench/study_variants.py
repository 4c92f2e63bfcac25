"""Study `variants`: N intervened variants in one Hydra run against N forwards with each peer.

Issue 13's numbers. Head 0 is the untouched model and head h zeroes the MLP output of late
layer `ABLATED[h - 1]` (so `trunk = auto` puts the split below the first ablated layer); the
same N variants run as N forwards of one Hugging Face model with forward hooks, with
TransformerLens `run_with_hooks`, and with nnsight edits (`bench.variant_methods`), all on the
compute-bound workload's checkpoint and batch, timed side by side in each repetition (order
shuffled). Measured:

1. the speed-up of the one expc forward over the fastest peer's N forwards, against the ideal
   `N·L / (trunk + N·(L − trunk))` (every head also runs its own `lm_head`, ~1.6 layers at this
   vocabulary, so the ideal with it counted is shown too; the target is judged on the
   layers-only ideal, the stricter one);
2. peak RSS of `expc run` computing each head's `effect loss`, N heads against the unsplit
   model, each in a fresh process (`bench.variants_probe`), next to the peers doing the same
   (N forwards of one model, each variant's logits reduced at once);
3. the cost of one intervention: 2 heads (trunk 4), head 1 zeroing `mlp_out[7]`, against the
   same 2 heads without it, as a share of one head's forward time (2 heads less the unsplit
   model), from the best of several repetitions (load only ever adds time), with the edit
   timed alone as a cross-check;
4. agreement: each variant's logits (real tokens) from every method against the HF hooks'.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import attrs
import torch

from bench import targets
from bench.bench_model import ideal_speedup
from bench.results import StudyResult, StudyVerdict
from bench.variant_methods import PEERS, VariantSpec, expc_variants
from bench.workloads import (CACHE_DIR, LLAMA_SHAPE, REPO_ROOT, VOCAB_SIZE, Batch,
                             ensure_llama_checkpoint, random_batches)

log = logging.getLogger("bench.study_variants")

NAME = "variants"
DESCRIPTION = ("N variants (head 0 untouched, heads 1.. zeroing `mlp_out` of a late layer each) in "
               "one expc Hydra run against N forwards with forward hooks, TransformerLens and "
               "nnsight; peak memory against one head; the cost of one intervention")
N_LAYERS = 8
ABLATED = (4, 5, 6)  # head h zeroes mlp_out[ABLATED[h - 1]]: trunk = auto = 4
OVERHEAD_LAYER, OVERHEAD_TRUNK = 7, 4
COLUMNS = ("N variants", "method", "time for the N variants", "expc speed-up over it (min–max)",
           "ideal (layers)", "of ideal", "ideal incl. lm_head", "peak RSS Δ", "peak vs 1 variant",
           "max abs diff vs HF hooks")


@attrs.frozen(kw_only=True)
class Settings:
    batch: int
    seq: int
    head_counts: tuple[int, ...]
    repeats: int
    overhead_repeats: int
    memory: bool  # fresh-process peak RSS probes
    peers: tuple[str, ...] = tuple(PEERS)


FULL = Settings(batch=8, seq=256, head_counts=(2, 4), repeats=3, overhead_repeats=5, memory=True)
QUICK = Settings(batch=4, seq=128, head_counts=(2, 4), repeats=2, overhead_repeats=3, memory=False)


def lm_head_in_layers(seq: int) -> float:
    """lm_head multiply-adds per token over one block's (projections, MLP, attention)."""
    hidden, inner = LLAMA_SHAPE["hidden_size"], LLAMA_SHAPE["intermediate_size"]
    kv = hidden * LLAMA_SHAPE["num_key_value_heads"] // LLAMA_SHAPE["num_attention_heads"]
    block = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inner + 2 * seq * hidden
    return VOCAB_SIZE * hidden / block


def _available(peers: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    import importlib.util

    found, missing = [], {}
    for name in peers:
        module = PEERS[name][2]
        if module is None or importlib.util.find_spec(module) is not None:
            found.append(name)
        else:
            missing[name] = f"{module} not installed here (run `bench/setup_env.sh`)"
    return found, missing


def _timed(run, batch: Batch) -> float:
    start = time.perf_counter()
    run(batch)
    return time.perf_counter() - start


def max_abs_diff(mine: list[torch.Tensor], reference: list[torch.Tensor], mask: torch.Tensor) -> float:
    """Largest |difference| over every variant's logits at the real tokens."""
    real = mask.bool()  # [B, S]
    return max(float((a[real] - b[real]).abs().max()) for a, b in zip(mine, reference))


def paired_times(runners: dict, batch: Batch, repeats: int, seed: int) -> dict[str, list[float]]:
    """Each runner once per repetition, in an order shuffled anew each repetition."""
    order, times = list(runners), {name: [] for name in runners}
    shuffle = random.Random(seed)
    for rep in range(repeats):
        shuffle.shuffle(order)
        for name in order:
            times[name].append(_timed(runners[name], batch))
        log.info("rep %d: %s", rep, ", ".join(f"{n} {times[n][-1]:.2f}s" for n in runners))
    return times


def compare(heads: int, batch: Batch, settings: Settings, peers: list[str], *, checkpoint: Path,
            tokenizer) -> dict:
    """Part 1 and 4 at one N: times, speed-up over the best peer, agreement."""
    ablated = ABLATED[:heads - 1]
    runners = {"expc": expc_variants(VariantSpec(heads=heads, ablated=ablated),
                                     checkpoint=checkpoint, batch=batch,
                                     folder=CACHE_DIR / "variants")}
    trunk = runners["expc"].model.hydra.trunk
    for name in peers:
        runners[name] = PEERS[name][1](ablated, checkpoint=checkpoint, tokenizer=tokenizer)
    outputs = {name: run(batch) for name, run in runners.items()}  # warm-up and agreement
    reference = outputs.get("hf_hooks")
    diffs = {name: max_abs_diff(out, reference, batch.attention_mask) if reference else None
             for name, out in outputs.items()}
    del outputs, reference
    times = paired_times(runners, batch, settings.repeats, seed=heads)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {name: [p / e for p, e in zip(times[name], times["expc"])] for name in peers}
    best = min(peers, key=medians.get) if peers else None
    ideal = ideal_speedup(heads, N_LAYERS, trunk)
    lm_head = lm_head_in_layers(batch.input_ids.shape[1])
    speedup = statistics.median(ratios[best]) if best else None
    best_of = min(times[best]) / min(times["expc"]) if best else None  # load only adds time
    return {"heads": heads, "trunk": trunk, "ablated": list(ablated), "times_s": times,
            "median_s": medians, "speedup_over": {n: statistics.median(r) for n, r in ratios.items()},
            "ratios": ratios, "best_peer": best, "speedup": speedup, "speedup_best_times": best_of, "ideal": ideal,
            "lm_head_in_layers": lm_head,
            "ideal_with_lm_head": ideal_speedup(heads, N_LAYERS, trunk, lm_head),
            "fraction_of_ideal": None if speedup is None else speedup / ideal,
            "max_abs_diff_vs_hf_hooks": diffs}


def overhead(batch: Batch, settings: Settings, *, checkpoint: Path) -> dict:
    """Part 2: a 2-head run with head 1 intervened against the same 2 heads without it."""
    folder = CACHE_DIR / "variants"
    specs = {"with": VariantSpec(heads=2, ablated=(OVERHEAD_LAYER,), trunk=OVERHEAD_TRUNK),
             "without": VariantSpec(heads=2, ablated=(), trunk=OVERHEAD_TRUNK),
             "unsplit": VariantSpec(heads=1, ablated=())}
    runners = {name: expc_variants(spec, checkpoint=checkpoint, batch=batch, folder=folder)
               for name, spec in specs.items()}
    for run in runners.values():
        run(batch)  # warm-up
    times = paired_times(runners, batch, settings.overhead_repeats, seed=0)
    best = {name: min(t) for name, t in times.items()}
    head = best["without"] - best["unsplit"]
    (edit,) = runners["with"].edits.values()
    hidden = torch.randn(*batch.input_ids.shape, runners["with"].model.config.hidden_size)  # [B, S, H]
    edit_times = [_timed(lambda _: edit(hidden), batch) for _ in range(20)]
    return {"layer": OVERHEAD_LAYER, "trunk": OVERHEAD_TRUNK, "times_s": times, "best_s": best,
            "head_s": head, "overhead_s": best["with"] - best["without"],
            "fraction_of_head": (best["with"] - best["without"]) / head,
            "paired_ratio_with_over_without": statistics.median(
                w / o for w, o in zip(times["with"], times["without"])),
            "edit_alone_s": statistics.median(edit_times),
            "edit_alone_fraction_of_head": statistics.median(edit_times) / head}


def probe(method: str, heads: int, settings: Settings) -> float | None:
    """Peak RSS Δ (MiB) of one method's N-variant losses in a fresh process."""
    command = [sys.executable, "-m", "bench.variants_probe", method, str(heads),
               "--batch", str(settings.batch), "--seq", str(settings.seq),
               "--layers", str(N_LAYERS), "--ablated", *map(str, ABLATED)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log.warning("memory probe %s %d failed: %s", method, heads, done.stderr[-2000:])
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def memory(settings: Settings, peers: list[str]) -> dict:
    """Peak RSS: expc at 1 and every N heads; HF hooks at 1 and the largest N, the other peers
    at the largest N only (each probe is a fresh process; the study keeps to ~3 minutes)."""
    if not settings.memory:
        return {}
    largest = max(settings.head_counts)
    found = {"expc": {heads: probe("expc", heads, settings) for heads in (1, *settings.head_counts)}}
    for name in peers:
        found[name] = {heads: probe(name, heads, settings)
                       for heads in ((1, largest) if name == "hf_hooks" else (largest,))}
    return found


def unique_parameter_mib(model: torch.nn.Module) -> float:
    """Memory of the model's parameters, each shared tensor counted once."""
    seen = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    return sum(seen.values()) / 2 ** 20


def _peak(found: dict, method: str, heads: int) -> tuple[str, str]:
    runs = found.get(method, {})
    peak, one = runs.get(heads), runs.get(1)
    if peak is None:
        return "—", "—"
    return f"{peak:+.0f} MiB", ("—" if not one else f"{peak / one:.2f}×")


def rows(by_heads: list[dict], found_memory: dict, labels: dict[str, str]) -> list[tuple[str, ...]]:
    table = []
    if "expc" in found_memory:
        table.append(("1", "expc, unsplit model (no intervention)", "—", "—", "—", "—", "—",
                      *_peak(found_memory, "expc", 1), "—"))
    for found in by_heads:
        heads = found["heads"]
        for name, seconds in found["median_s"].items():
            diff = found["max_abs_diff_vs_hf_hooks"][name]
            is_expc = name == "expc"
            speedup = found["speedup_over"].get(name)
            cells = [str(heads), labels[name], f"{seconds * 1000:.0f} ms",
                     "—" if is_expc else f"{speedup:.2f}× ({min(found['ratios'][name]):.2f}–"
                                         f"{max(found['ratios'][name]):.2f})"]
            if is_expc:
                fraction = found["fraction_of_ideal"]
                cells += [f"{found['ideal']:.2f}×",
                          "—" if fraction is None else f"{fraction:.0%} (of best peer)",
                          f"{found['ideal_with_lm_head']:.2f}×"]
            else:
                cells += [f"{found['ideal']:.2f}×", f"{speedup / found['ideal']:.0%}", "—"]
            cells += [*_peak(found_memory, name, heads),
                      "—" if diff is None or name == "hf_hooks" else f"{diff:.1e}"]
            table.append(tuple(cells))
    return table


def verdicts(by_heads: list[dict], found_memory: dict, cost: dict) -> tuple[StudyVerdict, ...]:
    found = []
    for numbers in by_heads:
        fraction = numbers["fraction_of_ideal"]
        found.append(StudyVerdict(
            target=(f"{numbers['heads']} variants in one Hydra run ≥ "
                    f"{targets.VARIANTS_SPEEDUP_FRACTION:.0%} of the ideal speed-up over the best "
                    "peer's N forwards"),
            measured=("no peer measured" if fraction is None else
                      f"{numbers['speedup']:.2f}× over {numbers['best_peer']} of an ideal "
                      f"{numbers['ideal']:.2f}×: {fraction:.0%} (from the best times: "
                      f"{numbers['speedup_best_times'] / numbers['ideal']:.0%})"),
            met=None if fraction is None else fraction >= targets.VARIANTS_SPEEDUP_FRACTION))
    expc = found_memory.get("expc", {})
    for heads in (h for h in sorted(expc) if h > 1):
        ratio = (expc[heads] / expc[1]) if expc[heads] and expc[1] else None
        found.append(StudyVerdict(
            target=f"peak RSS of a {heads}-head run ≤ {targets.VARIANTS_MEMORY_RATIO}× a 1-head run",
            measured="not measured" if ratio is None else
            f"{ratio:.2f}× ({expc[heads]:+.0f} vs {expc[1]:+.0f} MiB)",
            met=None if ratio is None else ratio <= targets.VARIANTS_MEMORY_RATIO))
    found.append(StudyVerdict(
        target=(f"an intervention costs ≤ {targets.INTERVENTION_OVERHEAD:.0%} of its head's "
                "forward time"),
        measured=(f"{cost['fraction_of_head']:+.1%} ({cost['overhead_s'] * 1000:+.1f} ms of a "
                  f"{cost['head_s'] * 1000:.0f} ms head; the edit alone "
                  f"{cost['edit_alone_fraction_of_head']:.2%})"),
        met=cost["fraction_of_head"] <= targets.INTERVENTION_OVERHEAD))
    worst = [d for n in by_heads for name, d in n["max_abs_diff_vs_hf_hooks"].items()
             if name == "expc" and d is not None]
    found.append(StudyVerdict(
        target=f"every variant's logits from expc equal HF hooks' within {targets.VARIANTS_TOLERANCE:.0e}",
        measured="HF hooks not measured" if not worst else f"max abs diff {max(worst):.1e}",
        met=None if not worst else max(worst) <= targets.VARIANTS_TOLERANCE))
    return tuple(found)


def measure(*, quick: bool, settings: Settings | None = None,
            checkpoint: Path | None = None) -> StudyResult:
    """The study; `settings` and `checkpoint` (an 8-layer Llama with the bench tokenizer)
    default to the suite's (tests pass small ones)."""
    from transformers import AutoTokenizer

    settings = settings or (QUICK if quick else FULL)
    checkpoint = checkpoint or ensure_llama_checkpoint(N_LAYERS)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    (batch,) = random_batches(n_batches=1, batch_size=settings.batch, seq_len=settings.seq, seed=1)
    peers, missing = _available(settings.peers)
    with torch.inference_mode():
        by_heads = []
        for heads in settings.head_counts:
            log.info("variants: %d in one Hydra run vs %s", heads, ", ".join(peers))
            by_heads.append(compare(heads, batch, settings, peers, checkpoint=checkpoint,
                                    tokenizer=tokenizer))
            gc.collect()
        cost = overhead(batch, settings, checkpoint=checkpoint)
    found_memory = memory(settings, peers)
    parameters = unique_parameter_mib(expc_variants(
        VariantSpec(heads=max(settings.head_counts), ablated=ABLATED[:max(settings.head_counts) - 1]),
        checkpoint=checkpoint, batch=batch, folder=CACHE_DIR / "variants").model)
    labels = {"expc": "expc, one Hydra forward", **{n: PEERS[n][0] for n in PEERS}}
    note = (f"intervention cost: 2 heads (trunk {OVERHEAD_TRUNK}), head 1 zeroing "
            f"mlp_out[{OVERHEAD_LAYER}]: best {cost['best_s']['with'] * 1000:.0f} ms with, "
            f"{cost['best_s']['without'] * 1000:.0f} ms without, "
            f"{cost['best_s']['unsplit'] * 1000:.0f} ms unsplit (one head "
            f"{cost['head_s'] * 1000:.0f} ms); paired median with / without "
            f"{cost['paired_ratio_with_over_without']:.3f}; the zero edit alone on [B, S, H] "
            f"{cost['edit_alone_s'] * 1000:.2f} ms. The {max(settings.head_counts)}-head model "
            f"holds {parameters:.0f} MiB of parameters, one copy (heads share the weights). "
            "Peak RSS: each run computes every variant's per-sample loss (`effect loss` in expc; "
            "the peers reduce each variant's logits at once), fresh process per cell; the peers "
            "reuse one model for all N forwards, so their memory does not grow with N either — "
            "a copy of the model per variant would pay N×")
    if missing:
        note += "; not measured: " + "; ".join(f"{n}: {why}" for n, why in missing.items())
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok",
        settings=(f"the compute-bound workload's random Llama (hidden "
                  f"{LLAMA_SHAPE['hidden_size']}, intermediate {LLAMA_SHAPE['intermediate_size']}, "
                  f"{N_LAYERS} layers, vocabulary {VOCAB_SIZE}), batch {settings.batch} × "
                  f"{settings.seq} tokens with mixed real lengths; N = "
                  f"{', '.join(map(str, settings.head_counts))}, head h zeroing mlp_out[{ABLATED[0]} + h − 1] "
                  f"(trunk = auto = {ABLATED[0]}); {settings.repeats} repetitions (order shuffled), "
                  f"{settings.overhead_repeats} for the intervention cost"
                  + ("" if settings.memory else "; no memory probes")),
        note=note, columns=COLUMNS, rows=tuple(rows(by_heads, found_memory, labels)),
        raw={"settings": attrs.asdict(settings), "by_heads": by_heads, "overhead": cost,
             "memory_peak_mib": found_memory, "parameters_mib": parameters},
        verdicts=verdicts(by_heads, found_memory, cost))
