"""`prune`: a finished run's scores -> a smaller Hugging Face checkpoint folder.

The one entry point behind `expc prune`. It checks everything it can before a tensor is
read (the run is complete, the metric and module name a prunable unit, the output folder
is new, the scores cover every layer, the count removes some units but not all), then
streams the pruned tensors into a temporary folder and renames it into place, with
`config.json` updated, the tokenizer files copied and the provenance in `expc_prune.json`.

Pruning a checkpoint folder never imports torch: the sizes come from
`parse_common` (the fields every family reads alike), the checkpoint's names from
`expc.models.checkpoint_names`, per-layer windows from `expc.models.sliding_windows`, the
tensors are moved as bytes. torch's import alone takes about as long as copying a
1B-parameter checkpoint's shards, so it would double the time of the command. Only a
built-in model, whose tensors torch generates, imports it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import attrs

from expc.models.checkpoint import CONFIG_FILE
from expc.models.config import parse_common
from expc.models.model_source import config_source, open_source
from expc.runtime.prune.rules import check_supported, pruned_config, slices_for
from expc.runtime.prune.scores import Selection, open_scoring_run, select
from expc.runtime.prune.units import unit_kind
from expc.runtime.prune.writer import (PROVENANCE, copy_tokenizer, refuse_existing,
                                       staged_folder, tensor_source, write_json, write_weights)

FORMAT = "expc-prune/1"
COUNT_RULE = ("units removed per layer = round(fraction * units) (Python's round, as "
              "interventions count `fraction =`), or units - keep")


@attrs.frozen(kw_only=True)
class PruneRequest:
    """What `expc prune` was asked (exactly one of `fraction` and `keep`)."""

    run: Path
    metric: str
    out: Path
    fraction: float | None = None
    keep: int | None = None
    module: str | None = None
    head: int | None = None


@attrs.frozen(kw_only=True)
class PruneResult:
    out: Path
    selection: Selection
    provenance: dict


def _provenance(request: PruneRequest, *, model: str, selection: Selection, config: dict,
                before: dict, note: str | None, copied: list[str]) -> dict:
    kind = selection.kind
    changed = {field: [before.get(field), value] for field, value in config.items()
               if before.get(field) != value}
    removed = ({"removed_layers": list(selection.removed_layers)} if kind.name == "layers" else
               {"removed": {str(layer): list(units) for layer, units in selection.removed.items()}})
    return {
        "format": FORMAT, "expc_version": importlib.metadata.version("expc"),
        "source_run": str(request.run.resolve()), "source_model": model,
        "metric": request.metric, "module": kind.module, "head": selection.head,
        "unit": kind.name, "fraction": request.fraction, "keep": request.keep,
        "rule": COUNT_RULE, "total": selection.total, "kept": selection.kept, **removed,
        "score_keys": list(selection.keys), "config_changes": changed,
        "exact": note is None, "note": note, "copied_files": copied,
    }


def prune(request: PruneRequest) -> PruneResult:
    """Write the pruned checkpoint of `request` (a `DiagnosticError` for bad input)."""
    run = open_scoring_run(request.run)
    kind = unit_kind(request.metric, request.module, where=run.where)
    refuse_existing(request.out)
    checkpoint, source_name = open_source(run.model), config_source(run.model)
    raw = checkpoint.config
    cfg = parse_common(raw, source_name)
    note = check_supported(cfg.model_type, kind, metric=request.metric, where=run.where)
    selection = select(run, kind=kind, metric=request.metric, head=request.head, config=cfg,
                       fraction=request.fraction, keep=request.keep)
    tensors = tensor_source(checkpoint)
    slices = slices_for(cfg, selection, tensors.shapes())
    config = pruned_config(raw, cfg, selection, source=source_name)
    with staged_folder(request.out) as folder:
        write_weights(folder, tensors, slices)
        write_json(folder / CONFIG_FILE, config)
        copied = copy_tokenizer(tensors, folder)
        provenance = _provenance(request, model=run.model, selection=selection, config=config,
                                 before=checkpoint.config, note=note, copied=copied)
        write_json(folder / PROVENANCE, provenance)
    return PruneResult(out=request.out, selection=selection, provenance=provenance)
