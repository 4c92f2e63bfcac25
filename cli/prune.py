"""`expc prune RUN_DIR --metric M (--fraction F | --keep K) -o OUT_DIR [--module ROLE]
[--head H]`: write a smaller Hugging Face checkpoint without the lowest-scored units of a
finished run (contracts §8, docs/prune.md). Exit 0 when written, 1 for bad input."""

from __future__ import annotations

from pathlib import Path

import click

from expc.cli._errors import Command


@click.command(name="prune", cls=Command)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--metric", required=True,
              help="Importance metric whose scores decide: channel_contribution, l2_norm, "
                   "iterative_channel (MLP neurons), kv_head_contribution (KV heads), "
                   "block_influence (layers).")
@click.option("--fraction", type=click.FloatRange(min=0.0, max=1.0), default=None,
              help="Fraction of the units of each layer to remove (round(F * units)).")
@click.option("--keep", type=click.IntRange(min=0), default=None,
              help="Units to keep in each layer (layers to keep, for block_influence).")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="New checkpoint folder to write (must not exist).")
@click.option("--module", default=None,
              help="Scored module role (default: the metric's: mlp.down_proj, "
                   "self_attn.o_proj, layers).")
@click.option("--head", type=click.IntRange(min=0), default=None,
              help="Hydra head whose scores decide (required when the run scored the "
                   "layers per head only).")
def command(run_dir: Path, metric: str, fraction: float | None, keep: int | None, out: Path,
            module: str | None, head: int | None) -> None:
    """Write a pruned checkpoint of the model RUN_DIR scored into a new folder."""
    if (fraction is None) == (keep is None):
        raise click.UsageError("give exactly one of --fraction and --keep")
    from expc.runtime.prune.export import PruneRequest, prune

    result = prune(PruneRequest(run=run_dir, metric=metric, out=out, fraction=fraction,
                                keep=keep, module=module, head=head))
    info = result.provenance
    click.echo(f"wrote {result.out}: {info['unit'].replace('_', ' ')} by {info['metric']}, "
               f"{info['total']} -> {info['kept']}"
               f"{'' if info['unit'] == 'layers' else ' per layer'}")
