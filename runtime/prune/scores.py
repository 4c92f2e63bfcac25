"""From a finished run's importance scores to the units `expc prune` removes in each layer.

The run must be complete and hold the metric's score for every layer of the model (the
same count goes in every layer, so an unscored layer cannot be ranked). Which scores a
Hydra run offers is decided per layer: with `--head H`, head H's key where the layer sits
in the heads, else the trunk's (`importance/{metric}/layers.{L}...`); without `--head`,
only the trunk's (unsplit) keys, and a layer that was scored per head only is a diagnostic
asking for `--head`. The lowest-scored units go, ties to the lower index, by the very
ranking `channels = lowest(...)` uses, so the pruned checkpoint removes exactly the units
such an intervention zeroes. Scores are read from either results layout (one
`results.safetensors`, or shards joined by their index) as numpy arrays: no torch.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
from safetensors import safe_open

from expc.models.config import ModelConfig
from expc.runtime.prune.units import CODE, LAYERS_MODULE, UnitKind, removed_count
from expc.spec.diagnostics import fail
from expc.spec.rankings import ranked
from expc.spec.run_format import (MANIFEST, RESULTS, importance_key, read_results_index,
                                  read_run_manifest)

HEADS_HELP = "choose the head whose scores decide with `--head H`"


@attrs.frozen(kw_only=True)
class ScoringRun:
    """A complete run folder: its manifest, results file and the model it scored."""

    folder: Path
    manifest: dict
    results: Path  # results.safetensors, or the sharded layout's index
    model: str  # the model reference the run loaded (`model.path` of the manifest)

    def stored(self) -> dict[str, tuple[Path, str]]:
        """Every result key stored whole -> its file and stored name (a sharded run keeps
        its reduced results, the scores among them, each as one piece)."""
        if self.results.name == RESULTS:
            with safe_open(self.results, framework="numpy") as handle:
                return {key: (self.results, key) for key in handle.keys()}
        return {key: (self.folder / entry["pieces"][0]["file"], entry["pieces"][0]["name"])
                for key, entry in read_results_index(self.results).items()
                if len(entry["pieces"]) == 1}

    @property
    def where(self) -> str:
        return str(self.folder / MANIFEST)


def open_scoring_run(folder: str | Path) -> ScoringRun:
    """A finished run folder, or a diagnostic saying why it cannot be pruned from."""
    folder = Path(folder)
    manifest, results = read_run_manifest(folder)
    where = str(folder / MANIFEST)
    if manifest["status"] != "complete" or results is None:
        raise fail(where, f"run folder `{folder}` is not a finished run (status "
                   f"`{manifest['status']}`)", code=CODE,
                   help=("finish that run first (`expc run --resume`)",))
    model = (manifest.get("model") or {}).get("path")
    if not isinstance(model, str):
        raise fail(where, f"{MANIFEST} names no model (`model.path`)", code=CODE)
    hydra = (manifest.get("ir") or {}).get("hydra") or {}
    if hydra.get("head_models"):
        raise fail(where, "the run loaded its heads from `head_models`; `expc prune` writes a "
                   "checkpoint of the run's `model` only", code=CODE,
                   help=("score the head's own checkpoint in a run without head_models",))
    return ScoringRun(folder=folder, manifest=manifest, results=results, model=model)


@attrs.frozen(kw_only=True)
class Selection:
    """The units to remove: per layer (neurons, KV heads) or whole layers."""

    kind: UnitKind
    metric: str
    head: int | None
    total: int  # units per layer (neurons, KV heads) or the model's layers
    removed: dict[int, tuple[int, ...]]  # layer -> removed units (sorted); empty for layers
    removed_layers: tuple[int, ...] = ()  # the removed layers (sorted), kind `layers`
    keys: tuple[str, ...]  # the score keys read, one per layer

    @property
    def kept(self) -> int:
        return self.total - (len(self.removed_layers) if self.kind.name == "layers"
                             else len(next(iter(self.removed.values()))))


def _module_path(kind: UnitKind, layer: int, head: int | None) -> str:
    path = f"layers.{layer}" if kind.module == LAYERS_MODULE else f"layers.{layer}.{kind.module}"
    return path if head is None else f"heads.{head}.{path}"


def _score_key(held: set[str], run: ScoringRun, kind: UnitKind, metric: str, layer: int,
               head: int | None) -> str:
    """The key whose scores decide at `layer` (see the module docstring)."""
    trunk = importance_key(metric, _module_path(kind, layer, None), "score")
    wanted = ([importance_key(metric, _module_path(kind, layer, head), "score")]
              if head is not None else [])
    for key in [*wanted, trunk]:
        if key in held:
            return key
    per_head = [k for k in held if k.startswith(f"importance/{metric}/head")
                and k.endswith("/" + trunk.split("/", 2)[2])]  # head{h}/layers.{L}.../score
    if per_head and head is None:
        raise fail(run.where, f"run `{run.folder}` scored layer {layer} per Hydra head "
                   f"({', '.join(sorted(per_head))}); no unsplit score to prune by",
                   code=CODE, help=(HEADS_HELP,))
    looked = ", ".join(f"`{k}`" for k in [*wanted, trunk])
    raise fail(run.where, f"run `{run.folder}` holds no `{metric}` score of layer {layer} "
               f"(looked for {looked})", code=CODE,
               help=(f"run `importance {metric} at {kind.module}[*]` on the model first"
                     if kind.module != LAYERS_MODULE else
                     f"run `importance {metric} at layers[*]` on the model first",))


def _read(run: ScoringRun, stored: dict[str, tuple[Path, str]], keys: list[str], *,
          size: int | None) -> list[np.ndarray]:
    scores = []
    for key in keys:
        file, name = stored[key]
        with safe_open(file, framework="numpy") as handle:
            scores.append(handle.get_tensor(name).astype(np.float64).reshape(-1))
    for key, score in zip(keys, scores):
        want = 1 if size is None else size
        if score.size != want:
            raise fail(run.where, f"`{key}` has {score.size} entries; the model has {want} "
                       f"units there", code=CODE,
                       help=("the run must have scored this very model",))
    return scores


def select(run: ScoringRun, *, kind: UnitKind, metric: str, head: int | None,
           config: ModelConfig, fraction: float | None, keep: int | None) -> Selection:
    """The lowest-scored units of every layer (or the lowest-scored layers)."""
    stored = run.stored()
    held = set(stored)
    if head is not None and not any(k.startswith(f"importance/{metric}/head{head}/") for k in held):
        has_heads = any(k.startswith(f"importance/{metric}/head") for k in held)
        raise fail(run.where, f"run `{run.folder}` holds no `{metric}` scores of head {head}"
                   if has_heads else f"run `{run.folder}` has no per-head `{metric}` scores; "
                   "drop `--head`", code=CODE)
    layers = range(config.n_layers)
    keys = [_score_key(held, run, kind, metric, layer, head) for layer in layers]
    if kind.name == "layers":
        scores = np.concatenate(_read(run, stored, keys, size=None))
        k = removed_count(config.n_layers, fraction=fraction, keep=keep, what="layers",
                          where=run.where)
        gone = tuple(ranked(scores, k, highest=False).tolist())
        return Selection(kind=kind, metric=metric, head=head, total=config.n_layers,
                         removed={}, removed_layers=gone, keys=tuple(keys))
    total = config.intermediate_size if kind.name == "neurons" else config.n_kv_heads
    what = "neurons" if kind.name == "neurons" else "KV heads"
    k = removed_count(total, fraction=fraction, keep=keep, what=f"{what} per layer",
                      where=run.where)
    removed = {layer: tuple(ranked(score, k, highest=False).tolist())
               for layer, score in zip(layers, _read(run, stored, keys, size=total))}
    return Selection(kind=kind, metric=metric, head=head, total=total, removed=removed,
                     keys=tuple(keys))
