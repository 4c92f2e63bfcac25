"""Peak memory of computing N variants' per-sample loss, measured in this fresh process.

    python -m bench.variants_probe METHOD HEADS --batch B --seq S --ablated L1 L2 ...

`expc`: `expc.run` of the variant spec with `effect loss` on every head (one Hydra forward,
heads 1.. ablating `ablated`; HEADS = 1 is the unsplit model). A peer (`hf_hooks`,
`transformer_lens`, `nnsight`): its N forwards on one model, each variant's logits reduced at
once to the same per-sample loss (float64, as expc's effect) and dropped. Like
`bench.rss_probe`, the starting point is the RSS after importing torch and transformers and
building the batch; prints one JSON line with the peak RSS above it, in MiB.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bench.harness import quiet_libraries
from bench.rss_probe import reset_peak, status_mib
from bench.variant_methods import PEERS, VariantSpec, write_spec
from bench.workloads import Batch, ensure_llama_checkpoint, random_batches


def per_sample_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean next-token loss over each sample's real tokens, in float64: [B, S, V] -> [B]."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)  # [B, S-1, V]
    picked = logp.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)  # [B, S-1]
    pairs = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).double()  # [B, S-1]
    return -(picked * pairs).sum(dim=1) / pairs.sum(dim=1)


def _expc(heads: int, ablated: tuple[int, ...], checkpoint: Path, batch: Batch) -> None:
    import expc

    with tempfile.TemporaryDirectory() as folder:
        spec = write_spec(VariantSpec(heads=heads, ablated=ablated[:heads - 1], loss=True),
                          checkpoint=checkpoint, batch=batch, folder=Path(folder))
        expc.run(spec, force=True, quiet=True)


def _peer(name: str, heads: int, ablated: tuple[int, ...], checkpoint: Path, batch: Batch) -> None:
    from transformers import AutoTokenizer

    _, build, _ = PEERS[name]
    runner = build(ablated[:heads - 1], checkpoint=checkpoint,
                   tokenizer=AutoTokenizer.from_pretrained(checkpoint),
                   reduce=lambda logits: per_sample_loss(logits, batch))  # logits dropped at once
    with torch.inference_mode():
        runner(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=["expc", *PEERS])
    parser.add_argument("heads", type=int)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seq", type=int, required=True)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--ablated", type=int, nargs="*", default=())
    args = parser.parse_args()
    quiet_libraries()
    import transformers  # noqa: F401  (part of the starting point, as for every method)

    checkpoint = ensure_llama_checkpoint(args.layers)
    (batch,) = random_batches(n_batches=1, batch_size=args.batch, seq_len=args.seq, seed=1)
    reset_peak()
    start = status_mib("VmRSS")
    if args.method == "expc":
        _expc(args.heads, tuple(args.ablated), checkpoint, batch)
    else:
        _peer(args.method, args.heads, tuple(args.ablated), checkpoint, batch)
    print(json.dumps({"peak_mib": status_mib("VmHWM") - start}))


if __name__ == "__main__":
    main()
