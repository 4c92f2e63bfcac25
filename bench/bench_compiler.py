"""What the compiler costs and saves, measured side by side in one process.

Model: Llama-shaped, hidden 512, intermediate 1024, 8 attention heads, 4 KV heads, a
vocabulary of 4096, random weights (std 0.02), CPU float32; input: batch 8 x 256 tokens
with mixed real lengths (right padding). Each repetition times the plain eager forward and
every compiled variant once, in an order rotated each time; the reported number is the
median of the per-repetition ratios. The machine is shared with other jobs, so every ratio is
given twice: by wall-clock time and by this process's CPU time (`time.process_time`),
which other processes do not inflate.

1. stripped graph (no captures, output kept) vs plain forward       target <= 1.01x
2. `resid_out[*]` into a masked-mean sink vs plain forward           target <= 1.05x
   (with the logits kept, i.e. the same work plus taps; and as compiled by default, where
   the unread `norm`/`lm_head` are pruned)
3. capture only `resid_out[1]` of a 32-layer model vs its full forward  target <= 0.15
4. compile time (trace + passes) of a 32-layer spec on the meta device   target < 2 s
   (`resid_out[*]`; and `resid_out[*]` plus a metric at every layer's down_proj)

    .venv/bin/python bench/bench_compiler.py [--repeats 15] [--threads 2] [--json out.json]

Allocator note: torch.fx's generated code frees each intermediate as soon as it is dead.
With glibc's default malloc that hands large blocks back to the OS and page-faults them in
again, which costs the compiled graph about 2-3% against eager on this machine; with
`MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296` in the environment the
gap disappears (and the plain eager forward gets faster too).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable

import torch

from expc.compiler.pipeline import compile_plan
from expc.compiler.plan import CaptureEntry, MetricEntry, Plan
from expc.models.config import ModelConfig
from expc.models.hydra import HydraTransformer
from expc.models.hydra_split import HydraSplit
from expc.models.registry import read_config

log = logging.getLogger("bench_compiler")

BATCH, SEQ, VOCAB = 8, 256, 4096


def config(n_layers: int) -> ModelConfig:
    return read_config({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
        "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": n_layers,
        "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
    })


def random_model(n_layers: int) -> HydraTransformer:
    """Built on meta, then given deterministic random weights (norms at 1)."""
    model = HydraTransformer.build(config(n_layers), init_device="meta").to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)  # [B, S]
    lengths = torch.randint(SEQ // 4, SEQ + 1, (BATCH,), generator=generator)
    lengths[0] = SEQ
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()  # [B, S]
    return ids, mask


def resid_plan(n_layers: int, layers) -> Plan:
    return Plan(layout=HydraSplit.single(n_layers), captures=tuple(
        CaptureEntry(key=f"capture/resid_out_{L}", site="resid_out", name="resid_out", layer=L,
                     head=None, mode="mean", mask="attention") for L in layers))


def with_metrics(plan: Plan) -> Plan:
    n = plan.layout.n_layers
    metrics = tuple(
        MetricEntry(key=f"importance/l2_norm/layers.{L}.mlp.down_proj", metric="l2_norm",
                    module="mlp.down_proj", module_path=f"layers.{L}.mlp.down_proj", layer=L,
                    head=None) for L in range(n))
    return Plan(layout=plan.layout, captures=plan.captures, metrics=metrics)


def masked_mean_sinks(plan: Plan, mask: torch.Tensor, kept: list) -> dict[str, Callable]:
    """A simple `mean(mask = attention)` per key: `[B, S, H]` -> `[B, H]`, kept in `kept`."""
    weights = mask.to(torch.float32)[:, :, None]  # [B, S, 1]
    counts = weights.sum(1)  # [B, 1]

    def sink(hidden: torch.Tensor) -> None:  # [B, S, H]
        kept.append((hidden * weights).sum(1) / counts)  # [B, H]

    return {key: sink for key in plan.keys}


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def rotated_ratios(plain: Callable[[], object], others: dict[str, Callable[[], object]],
                   repeats: int) -> dict[str, dict]:
    """Per method, medians over repetitions of method / plain (wall and CPU time).

    Every repetition runs the plain forward and each method once, the order rotated by one
    each time, so drifts in machine load hit all of them alike.
    """
    methods = {"plain": plain, **others}
    names = list(methods)
    spent: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with torch.inference_mode():
        for fn in methods.values():
            fn()  # warm-up
        for rep in range(repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                start = _clocks()
                methods[name]()
                end = _clocks()
                spent[name].append((end[0] - start[0], end[1] - start[1]))
    base = spent["plain"]
    return {
        name: {"ratio_wall": statistics.median(t[0] / b[0] for t, b in zip(spent[name], base)),
               "ratio_cpu": statistics.median(t[1] / b[1] for t, b in zip(spent[name], base)),
               "plain_wall_s": statistics.median(b[0] for b in base), "repeats": repeats}
        for name in others
    }


def compile_seconds(plan: Plan, n_layers: int, repeats: int) -> dict:
    """Medians of wall and CPU seconds for trace + passes on the meta device."""
    model = HydraTransformer.build(config(n_layers), init_device="meta")
    wall, cpu = [], []
    for _ in range(repeats):
        start = _clocks()
        compile_plan(plan, model)
        end = _clocks()
        wall.append(end[0] - start[0])
        cpu.append(end[1] - start[1])
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "repeats": repeats}


def compile_seconds_by_layers(layer_counts, repeats: int) -> dict[int, dict[str, dict]]:
    """Per layer count: compile seconds of `resid_out[*]`, and of it plus a metric per layer."""
    found = {}
    for n_layers in layer_counts:
        plan = resid_plan(n_layers, range(n_layers))
        found[n_layers] = {"resid": compile_seconds(plan, n_layers, repeats),
                           "resid_metrics": compile_seconds(with_metrics(plan), n_layers, repeats)}
        log.info("compile %d layers: %.2f s wall (%.2f s with metrics)", n_layers,
                 found[n_layers]["resid"]["wall_s"], found[n_layers]["resid_metrics"]["wall_s"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    ids, mask = batch()
    results = {}

    model = random_model(8)
    stripped = compile_plan(resid_plan(8, ()), model, keep_output=True).graph_module
    kept: list = []
    plan = resid_plan(8, range(8))
    sinks = masked_mean_sinks(plan, mask, kept)
    with_logits = compile_plan(plan, model, sinks, keep_output=True).graph_module
    pruned = compile_plan(plan, model, sinks).graph_module

    def run(gm: torch.nn.Module) -> Callable[[], object]:
        def forward():
            kept.clear()
            return gm(ids, mask)
        return forward

    results.update(rotated_ratios(lambda: model(ids, mask), {
        "stripped_vs_plain": run(stripped),
        "resid_out_mean_vs_plain": run(with_logits),
        "resid_out_mean_pruned_vs_plain": run(pruned),
    }, args.repeats))
    del model, stripped, with_logits, pruned

    deep = random_model(32)
    layer1_plan = resid_plan(32, (1,))
    layer1 = compile_plan(layer1_plan, deep, masked_mean_sinks(layer1_plan, mask, kept))
    results.update(rotated_ratios(lambda: deep(ids, mask), {
        "resid_out_1_of_32_vs_plain": run(layer1.graph_module),
    }, max(3, args.repeats // 3)))
    del deep, layer1

    compiled = compile_seconds_by_layers((32,), 3)[32]
    results["compile_32_layers_resid_s"] = compiled["resid"]
    results["compile_32_layers_resid_metrics_s"] = compiled["resid_metrics"]

    for name, value in results.items():
        if "ratio_wall" in value:
            shown = (f"{value['ratio_wall']:.3f}x wall, {value['ratio_cpu']:.3f}x cpu "
                     f"(plain {value['plain_wall_s'] * 1e3:.0f} ms, {value['repeats']} reps)")
        else:
            shown = f"{value['wall_s']:.2f} s wall, {value['cpu_s']:.2f} s cpu"
        log.info("%-32s %s", name, shown)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
