"""Forward speed of our model code: against transformers, and Hydra against N full forwards.

Two questions, both measured side by side in one process on the same checkpoint (a random
Llama saved once by `transformers`; hidden 512, 8 layers, batch 8 x 256 tokens, float32, CPU):

1. Our `HydraTransformer` forward vs `transformers`' forward of the same weights
   (target: ratio ours / theirs <= 1.0).
2. Hydra with N heads and trunk = half the layers vs N forwards of the unsplit model
   (target: at least 90% of the ideal speed-up N*L / (trunk + N*(L - trunk)), 1.6x for
   N=4, L=8, trunk=4). That ideal counts layers only; every head also runs the shared
   `lm_head`, which at a 32000-token vocabulary costs about five layers, so the bench also
   reports the ideal with `lm_head` counted, and `--vocab` lets a smaller vocabulary show
   the layer-bound case.

The machine is shared and noisy, so each repetition times every contender once, in an order
that alternates between repetitions, and the reported number is the median of the
per-repetition ratios.

    .venv/bin/python bench/bench_model.py [--vocab 32000] [--repeats 5] [--parts transformers hydra]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger("bench_model")

REPO = Path(__file__).resolve().parent.parent
SHAPE = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=8, max_position_embeddings=512, tie_word_embeddings=False)
BATCH, SEQ = 8, 256
HEADS, TRUNK = 4, 4


def ensure_checkpoint(folder: Path, vocab: int) -> Path:
    """A random Llama checkpoint saved by transformers (built once, then reused)."""
    if (folder / "config.json").is_file():
        return folder
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=vocab, **SHAPE)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired_ratios(first: Callable[[], object], second: Callable[[], object], repeats: int) -> dict:
    """Median of time(first) / time(second) over repetitions, alternating which runs first."""
    first(), second()  # warm-up
    ratios, times_first, times_second = [], [], []
    for rep in range(repeats):
        if rep % 2:
            t_second, t_first = timed(second), timed(first)
        else:
            t_first, t_second = timed(first), timed(second)
        times_first.append(t_first)
        times_second.append(t_second)
        ratios.append(t_first / t_second)
        log.info("rep %d: %.3fs vs %.3fs (ratio %.3f)", rep, t_first, t_second, ratios[-1])
    return {"median_ratio": statistics.median(ratios), "ratios": ratios,
            "median_s_first": statistics.median(times_first),
            "median_s_second": statistics.median(times_second)}


def ideal_speedup(heads: int, layers: int, trunk: int, lm_head_layers: float = 0.0) -> float:
    """Full forwards / Hydra in layer units; `lm_head_layers` is lm_head's cost in layers."""
    full = heads * (layers + lm_head_layers)
    return full / (trunk + heads * (layers - trunk) + heads * lm_head_layers)


def lm_head_in_layers(vocab: int, seq: int = SEQ) -> float:
    """lm_head multiply-adds per token over one block's (projections, MLP, attention)."""
    hidden, inner = SHAPE["hidden_size"], SHAPE["intermediate_size"]
    block = 4 * hidden * hidden + 3 * hidden * inner + 2 * seq * hidden
    return vocab * hidden / block


def random_inputs(batch: int = BATCH, seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids `[B, S]` (seeded) and an all-ones attention mask `[B, S]`."""
    ids = torch.randint(0, 1000, (batch, seq), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids)


def versus_transformers(folder: Path, ours, ids: torch.Tensor, mask: torch.Tensor,
                        repeats: int) -> tuple[float, dict]:
    """Largest logit difference, and paired timing ratios ours / transformers."""
    import transformers

    theirs = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    difference = (ours(ids, mask)[0] - theirs(input_ids=ids, attention_mask=mask).logits).abs().max()
    timing = paired_ratios(lambda: ours(ids, mask),
                           lambda: theirs(input_ids=ids, attention_mask=mask), repeats)
    return float(difference), timing


def hydra_versus_full(folder: Path, ours, ids: torch.Tensor, mask: torch.Tensor,
                      repeats: int, *, heads: int = HEADS, trunk: int = TRUNK) -> dict:
    """Paired ratios N full forwards / one Hydra forward, with the ideals to compare to."""
    from expc.models.loading import load_model
    from expc.spec import ir

    hydra = load_model(folder, hydra=ir.Hydra(trunk=trunk, heads=heads))
    timing = paired_ratios(lambda: [ours(ids, mask) for _ in range(heads)],
                           lambda: hydra(ids, mask), repeats)
    ideal = ideal_speedup(heads, SHAPE["num_hidden_layers"], trunk)
    lm_head = lm_head_in_layers(ours.config.vocab_size, ids.shape[1])
    ideal_with_lm_head = ideal_speedup(heads, SHAPE["num_hidden_layers"], trunk, lm_head)
    speedup = timing["median_ratio"]
    return {"heads": heads, "trunk": trunk, "speedup_vs_full_forwards": timing,
            "ideal_speedup": ideal, "fraction_of_ideal": speedup / ideal,
            "lm_head_cost_in_layers": lm_head, "ideal_with_lm_head": ideal_with_lm_head,
            "fraction_of_ideal_with_lm_head": speedup / ideal_with_lm_head}


def report(results: dict) -> None:
    if "ours_vs_transformers" in results:
        vs_hf = results["ours_vs_transformers"]
        log.info("ours / transformers forward: median ratio %.3f (target <= 1.0; %.3fs vs %.3fs)",
                 vs_hf["median_ratio"], vs_hf["median_s_first"], vs_hf["median_s_second"])
    if "hydra" in results:
        hydra = results["hydra"]
        log.info("hydra N=%d trunk=%d vs %d full forwards: speed-up %.3fx, %.0f%% of the ideal "
                 "%.2fx (target >= 90%%)", hydra["heads"], hydra["trunk"], hydra["heads"],
                 hydra["speedup_vs_full_forwards"]["median_ratio"],
                 100 * hydra["fraction_of_ideal"], hydra["ideal_speedup"])
        log.info("counting lm_head (%.2f layers' worth at vocab %d) the ideal is %.2fx: %.0f%% of it",
                 hydra["lm_head_cost_in_layers"], results["vocab_size"],
                 hydra["ideal_with_lm_head"], 100 * hydra["fraction_of_ideal_with_lm_head"])


def run(folder: Path, repeats: int, parts: tuple[str, ...]) -> dict:
    from expc.models.loading import load_model

    ids, mask = random_inputs()
    ours = load_model(folder)
    results = {"threads": torch.get_num_threads(), "batch": BATCH, "seq": SEQ, **SHAPE,
               "vocab_size": ours.config.vocab_size, "repeats": repeats}
    with torch.inference_mode():
        if "transformers" in parts:
            difference, timing = versus_transformers(folder, ours, ids, mask, repeats)
            results.update(max_abs_logit_difference=difference, ours_vs_transformers=timing)
        if "hydra" in parts:
            results["hydra"] = hydra_versus_full(folder, ours, ids, mask, repeats)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench-model")
    parser.add_argument("--parts", nargs="+", choices=("transformers", "hydra"),
                        default=["transformers", "hydra"], help="which comparisons to run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    folder = ensure_checkpoint(args.cache / f"llama-v{args.vocab}", args.vocab)
    results = run(folder, args.repeats, tuple(args.parts))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
