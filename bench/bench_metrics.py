"""Cost of the aggregators and importance metrics per batch, against the forward they ride on.

Target (3) of issue 4 asks that all five metrics at every layer cost at most 1.3x the plain
forward of a hidden-512, 8-layer model (intermediate 1024, 8 heads, 4 KV heads) on CPU
float32; target (2) that `mean(mask = attention)` at every `resid_out` cost at most 1.05x.
The runtime adds the fx taps; this script measures what the state objects themselves
cost: each update on the tensors its module sees (batch 8 x 256 tokens, a quarter of them
padding; `iterative_channel` with 4 rounds, averaged over them), as a median over
repetitions, next to the median plain forward of the same model built with `transformers`.
The estimated ratio is (forward + n_layers * per-layer state cost) / forward. Times are CPU seconds of one thread (`time.process_time`), which
stay meaningful when other work shares the machine; wall-clock medians swing with it.

    .venv/bin/python bench/bench_metrics.py [--repetitions 7] [--batch 8] [--tokens 256]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from expc.runtime.aggregate.create import create_aggregator
from expc.runtime.importance.create import create_metric

log = logging.getLogger("bench_metrics")

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 512, 1024, 8, 8, 4


def median_seconds(fn: Callable[[], object], repetitions: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repetitions):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def plain_forward(batch: int, tokens: int, mask: torch.Tensor) -> Callable[[], object]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=1024, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=KV_HEADS, max_position_embeddings=tokens)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 1024, (batch, tokens))

    def run() -> object:
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask)

    return run


def state_costs(batch: int, tokens: int, mask: torch.Tensor,
                repetitions: int) -> dict[str, float]:
    """Median seconds of one update of each state object, at one layer."""
    hidden = torch.randn(batch, tokens, HIDDEN)  # [B, S, H]
    mlp_in = torch.randn(batch, tokens, INTERMEDIATE)  # [B, S, I] down_proj input
    down = torch.randn(HIDDEN, INTERMEDIATE) / INTERMEDIATE ** 0.5  # [H, I]
    out_proj = torch.randn(HIDDEN, HIDDEN) / HIDDEN ** 0.5  # [H, H]
    down_out, o_out = mlp_in @ down.T, hidden @ out_proj.T
    costs: dict[str, float] = {}
    for mode in ("mean", "max", "full", "dataset_mean"):
        def add(mode: str = mode) -> None:
            create_aggregator(mode=mode).add(hidden, attention_mask=mask)
        costs[f"aggregate {mode}"] = median_seconds(add, repetitions)
    feeds = {
        "l2_norm": (down, mlp_in, None, {}),
        "channel_contribution": (down, mlp_in, None, {}),
        "kv_head_contribution memory": (out_proj, hidden, o_out, {"optimize_for": "memory"}),
        "kv_head_contribution latency": (out_proj, hidden, o_out, {"optimize_for": "latency"}),
        "layernorm_contribution": (None, None, hidden, {}),
    }
    for label, (weight, x_in, y_out, params) in feeds.items():
        def update(label: str = label, weight=weight, x_in=x_in, y_out=y_out,
                   params=params) -> None:
            metric = create_metric(label.split()[0], weight=weight, params=params,
                                   n_kv_heads=KV_HEADS, head_dim=HIDDEN // HEADS,
                                   total_batches=1)
            metric.update(x_in, y_out, attention_mask=mask)
        costs[label] = median_seconds(update, repetitions)

    def rounds() -> None:  # iterations = 4 over 4 batches: every round once, as the example
        metric = create_metric("iterative_channel", weight=down, params={"iterations": 4},
                               total_batches=4)
        for _ in range(4):
            metric.update(mlp_in, down_out, attention_mask=mask)
    costs["iterative_channel"] = median_seconds(rounds, repetitions) / 4
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    mask = torch.ones(args.batch, args.tokens, dtype=torch.long)
    mask[:, : args.tokens // 4] = 0  # left padding on a quarter of the positions
    forward = median_seconds(plain_forward(args.batch, args.tokens, mask), args.repetitions)
    costs = state_costs(args.batch, args.tokens, mask, args.repetitions)
    log.info("plain forward (%d layers, %dx%d tokens): %.1f ms", LAYERS, args.batch,
             args.tokens, forward * 1e3)
    for label, seconds in costs.items():
        log.info("  %-30s %7.2f ms per layer  (%5.1f%% of a forward at every layer)",
                 label, seconds * 1e3, 100 * LAYERS * seconds / forward)
    five = ["l2_norm", "channel_contribution", "kv_head_contribution memory",
            "layernorm_contribution", "iterative_channel"]
    all_metrics = (forward + LAYERS * sum(costs[name] for name in five)) / forward
    means = (forward + LAYERS * costs["aggregate mean"]) / forward
    log.info("estimated ratio, all five metrics at every layer: %.3fx (target <= 1.3x)",
             all_metrics)
    log.info("estimated ratio, mean(mask = attention) at every resid_out: %.3fx "
             "(target <= 1.05x)", means)


if __name__ == "__main__":
    main()
