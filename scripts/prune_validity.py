"""Do the importance scores beat chance? Measured by expc itself; writes the tables of
docs/pruning-validity.md.

For each metric that can select units (l2_norm, channel_contribution and iterative_channel
pick MLP neurons at `mlp.down_proj`, kv_head_contribution whole KV heads at
`self_attn.o_proj`, layernorm_contribution channels at `post_attention_layernorm`) and each
fraction, one Hydra head zeroes the lowest-scored units in every layer, one the
highest-scored, and `--seeds` heads a random draw of as many units (at `self_attn.o_proj`
whole KV heads, drawn like `random(...)`: `randperm` seeded with seed + layer, written out as
channel lists). Head 0 is untouched; every head is measured against it in one forward pass:

- all-MiniLM-L6-v2 (trained): `effect cosine` of the sentence embedding (the masked mean of
  the last layer);
- a tiny Llama with random weights, built here from a config (mechanics only: its scores
  rank noise): `effect kl` against head 0 and `effect loss`.

The scores come from one run (`bench/sentences.txt`), the measurement from other texts
(`examples/data/prompts.jsonl`). Per metric and fraction the tables give the mean effect of
lowest, random (per sample averaged over the seeds) and highest with 95% intervals, and the
paired difference lowest - random per sample with its interval: a metric beats random when
that interval excludes 0 in the good direction.

    .venv/bin/python scripts/prune_validity.py      # ~1 minute on 2 CPU cores

Run folders go under `--work` (default runs/prune_validity); their reports show the
"what pruning costs" curves. The text outside the marked block of the doc is left as is.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

import attrs
import torch

import expc

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs/pruning-validity.md"
BEGIN, END = "<!-- prune_validity.py: begin -->", "<!-- prune_validity.py: end -->"
MINILM = ".cache/models/all-MiniLM-L6-v2"
SCORE_TEXTS, EVAL_TEXTS = "bench/sentences.txt", "examples/data/prompts.jsonl"
FRACTIONS = (0.1, 0.25, 0.5)
ITERATIONS = 4  # iterative_channel rounds; the scoring data gives 8 batches of 8
Z95 = 1.96
BOS, BYTE_PAD, MAX_LENGTH = 257, 256, 64
COMMAND = ".venv/bin/python scripts/prune_validity.py"

log = logging.getLogger("prune_validity")


@attrs.frozen(kw_only=True)
class Metric:
    name: str
    target: str  # the module role its units sit at
    units: str


METRICS = (
    Metric(name="l2_norm", target="mlp.down_proj", units="MLP neurons"),
    Metric(name="channel_contribution", target="mlp.down_proj", units="MLP neurons"),
    Metric(name="iterative_channel", target="mlp.down_proj", units="MLP neurons"),
    Metric(name="kv_head_contribution", target="self_attn.o_proj", units="KV heads"),
    Metric(name="layernorm_contribution", target="post_attention_layernorm",
           units="norm channels"),
)


@attrs.frozen(kw_only=True)
class Variant:
    """One Hydra head: the same selection rule at every layer."""

    head: int
    kind: str  # lowest | highest | random
    target: str
    fraction: float
    metric: str | None = None  # lowest/highest
    seed: int = 0  # random


@attrs.frozen(kw_only=True)
class Model:
    """A model under test and how its heads are compared."""

    tag: str
    title: str
    path: str
    source: str  # the scoring data's `source = ...`
    eval_source: str
    effects: tuple[str, ...]  # effect statements; the first names the table's effect
    table_effects: tuple[tuple[str, bool], ...]  # (effect name, higher is better)

    def config(self) -> dict:
        return json.loads(Path(self.path, "config.json").read_text(encoding="utf-8"))


def variants(seeds: int) -> list[Variant]:
    """Heads 1.. : lowest and highest of every metric and fraction, then the random draws
    of every target and fraction (shared by the metrics of that target)."""
    out: list[Variant] = []
    for metric in METRICS:
        for fraction in FRACTIONS:
            for kind in ("lowest", "highest"):
                out.append(Variant(head=len(out) + 1, kind=kind, target=metric.target,
                                   fraction=fraction, metric=metric.name))
    for target in dict.fromkeys(m.target for m in METRICS):
        for fraction in FRACTIONS:
            for seed in range(seeds):
                out.append(Variant(head=len(out) + 1, kind="random", target=target,
                                   fraction=fraction, seed=seed))
    return out


def kv_layout(config: dict) -> tuple[int, int, int]:
    """(KV heads, query heads, channels of `o_proj`'s input per query head)."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return config.get("num_key_value_heads") or heads, heads, head_dim


def random_kv_channels(config: dict, *, fraction: float, seed: int, layer: int) -> list[int]:
    """`o_proj` input channels of round(fraction * K) random KV heads, drawn as `random(...)`
    draws units (`runtime/intervene/units.py`)."""
    n_kv, heads, head_dim = kv_layout(config)
    draw = torch.randperm(n_kv, generator=torch.Generator().manual_seed(seed + layer))
    block = heads // n_kv * head_dim
    return [g * block + c for g in sorted(draw[: round(fraction * n_kv)].tolist())
            for c in range(block)]


def statements(variant: Variant, config: dict, scores: Path) -> list[str]:
    """The head's `intervene` statements: one for every layer, or one per layer for random
    KV heads (channel lists differ per layer)."""
    if variant.kind != "random":
        chosen = [("*", f'{variant.kind}(run = "{scores}", metric = {variant.metric}, '
                        f"fraction = {variant.fraction})")]
    elif variant.target != "self_attn.o_proj":
        chosen = [("*", f"random(fraction = {variant.fraction}, seed = {variant.seed})")]
    else:
        chosen = [(str(layer), str(random_kv_channels(config, fraction=variant.fraction,
                                                      seed=variant.seed, layer=layer)))
                  for layer in range(config["num_hidden_layers"])]
    return [f"intervene {variant.target}[{layers}] of heads[{variant.head}] "
            f"{{ set = zero, channels = {units} }}" for layers, units in chosen]


def scoring_spec(model: Model, out: Path) -> str:
    body = "\n".join(f"    importance {m.name} at {m.target}[*]"
                     + (f" {{ iterations = {ITERATIONS} }}" if m.name == "iterative_channel"
                        else "") for m in METRICS)
    return (f"experiment {model.tag}_scores {{\n    model = \"{model.path}\"\n"
            f"    data {{ source = {model.source}  batch_size = 8  max_length = {MAX_LENGTH} }}\n"
            f"{body}\n    output {{ dir = \"{out}\" }}\n}}\n")


def check_spec(model: Model, heads: list[Variant], scores: Path, out: Path) -> str:
    config = model.config()
    lines = [line for v in heads for line in statements(v, config, scores)]
    return (f"experiment {model.tag}_validity {{\n    model = \"{model.path}\"\n"
            f"    hydra {{ trunk = 0  heads = {len(heads) + 1} }}\n"
            f"    data {{ source = {model.eval_source}  batch_size = 8  "
            f"max_length = {MAX_LENGTH} }}\n"
            + "".join(f"    {line}\n" for line in lines + list(model.effects))
            + f"    output {{ dir = \"{out}\" }}\n}}\n")


def run_spec(text: str, path: Path) -> None:
    path.write_text(text, encoding="utf-8")
    expc.run(path, force=True)
    log.info("ran %s", path)


@attrs.frozen(kw_only=True)
class Stat:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: torch.Tensor) -> Stat:
        values = values.double()
        half = Z95 * float(values.std(unbiased=True)) / math.sqrt(values.numel())
        mean = float(values.mean())
        return cls(mean=mean, low=mean - half, high=mean + half)

    def text(self) -> str:
        return f"{_num(self.mean)} [{_num(self.low)}, {_num(self.high)}]"


def _num(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"


def verdict(diff: Stat, higher_is_better: bool) -> str:
    """Whether lowest beats random: the paired interval excludes 0 in the good direction."""
    good, bad = (diff.low > 0, diff.high < 0) if higher_is_better else (diff.high < 0,
                                                                         diff.low > 0)
    return "**beats random**" if good else "worse than random" if bad else "not distinguishable"


def table(run_dir: Path, heads: list[Variant], name: str, higher_is_better: bool) -> str:
    tensors = expc.open_run(run_dir).tensors
    values = {v.head: tensors[f"effect/{name}/head{v.head}"].double() for v in heads}
    rows = ["| metric (units) | removed | lowest | random | highest | lowest − random "
            "(paired) | lowest vs random | lowest, random, highest in order |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for metric in METRICS:
        for fraction in FRACTIONS:
            def pick(kind: str) -> torch.Tensor:
                chosen = [values[v.head] for v in heads
                          if (v.kind, v.fraction, v.target) == (kind, fraction, metric.target)
                          and (kind == "random" or v.metric == metric.name)]
                return torch.stack(chosen).mean(dim=0)  # [N], random averaged over seeds

            low, rand, high = pick("lowest"), pick("random"), pick("highest")
            stats = [Stat.of(x) for x in (low, rand, high)]
            means = [s.mean for s in stats]
            ordered = means == sorted(means, reverse=higher_is_better)
            diff = Stat.of(low - rand)
            rows.append(f"| {metric.name} ({metric.units}) | {fraction:.0%} | "
                        + " | ".join(s.text() for s in stats)
                        + f" | {diff.text()} | {verdict(diff, higher_is_better)} | "
                        + ("yes" if ordered else "**no**") + " |")
    return "\n".join(rows)


def byte_tokens(source: Path, target: Path) -> None:
    """A text file or jsonl of texts as byte ids after a bos (the tiny Llama's vocabulary)."""
    lines = source.read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] if source.suffix == ".jsonl" else line
             for line in lines if line.strip()]
    target.write_text("".join(json.dumps({"input_ids": [BOS, *t.encode()[: MAX_LENGTH - 1]]})
                              + "\n" for t in texts), encoding="utf-8")


def random_llama(folder: Path) -> None:
    """A randomly initialised Llama (transformers' own init, seed 0): 4 layers, 16 query
    heads in 8 KV groups, a byte vocabulary."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=259, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=128,
        pad_token_id=BYTE_PAD, bos_token_id=BOS, eos_token_id=258, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)


def models(work: Path) -> list[Model]:
    llama = work / "random-llama"
    random_llama(llama)
    for source, name in ((SCORE_TEXTS, "scores"), (EVAL_TEXTS, "eval")):
        byte_tokens(Path(source), work / f"llama_{name}.jsonl")
    last = json.loads(Path(MINILM, "config.json").read_text())["num_hidden_layers"] - 1
    return [
        Model(tag="minilm", title="all-MiniLM-L6-v2 (trained)", path=MINILM,
              source=f'text("{SCORE_TEXTS}")',
              eval_source=f'jsonl("{EVAL_TEXTS}", field = "text")',
              effects=(f"effect cosine of heads[1:] vs heads[0] {{ at = resid_out[{last}], "
                       "aggregate = mean(mask = attention) }",),
              table_effects=(("cosine", True),)),
        Model(tag="llama", title="tiny Llama with RANDOM weights (mechanics only)",
              path=str(llama), source=f'tokens("{work}/llama_scores.jsonl")',
              eval_source=f'tokens("{work}/llama_eval.jsonl")',
              effects=("effect kl of heads[1:] vs heads[0]", "effect loss"),
              table_effects=(("kl", False), ("loss", False))),
    ]


def measure(model: Model, work: Path, seeds: int) -> str:
    """Score, measure, and the Markdown of one model's tables."""
    heads = variants(seeds)
    scores, check = work / f"{model.tag}_scores", work / f"{model.tag}_validity"
    run_spec(scoring_spec(model, scores), work / f"{model.tag}_scores.exp")
    run_spec(check_spec(model, heads, scores, check), work / f"{model.tag}_validity.exp")
    samples = expc.open_run(check).manifest["data"]["samples"]
    parts = [f"### {model.title}\n",
             f"Scores from `{SCORE_TEXTS}`; effects over the {samples} texts of "
             f"`{EVAL_TEXTS}`; {len(heads) + 1} Hydra heads in one run; random: {seeds} draws "
             "per fraction, averaged per sample.\n"]
    for name, higher in model.table_effects:
        better = "higher" if higher else "lower"
        parts.append(f"`effect {name}` (mean and 95% CI; {better} is better):\n\n"
                     + table(check, heads, name, higher) + "\n")
    return "\n".join(parts)


def write_doc(block: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + block + "\n" + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/prune_validity", help="run folders go here")
    parser.add_argument("--seeds", type=int, default=3, help="random draws per fraction")
    parser.add_argument("--no-doc", action="store_true", help="print, do not write the doc")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.chdir(REPO)  # specs name models and data relative to the repository
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    block = (f"Reproduce: `{COMMAND}` (writes this block; run folders in `{work}`).\n\n"
             + "\n".join(measure(m, work, args.seeds) for m in models(work)))
    if args.no_doc:
        print(block)
    else:
        write_doc(block)
        log.info("wrote %s", DOC)


if __name__ == "__main__":
    main()
