"""The `intervention/.../channels` result tensors and their manifest entries.

Each intervention entry stores the units it changed (`int64 [K]`: channels, or KV-head
indices for units scored by `kv_head_contribution`, not expanded), so a run folder says
exactly what was ablated, and its manifest entry says it in words: "zero-ablation of the
25% lowest channel_contribution channels of mlp.down_proj input at layer 3, head 1".
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.compiler.plan import InterventionEntry
from expc.runtime.intervene.units import Selection
from expc.spec import ir
from expc.spec.run_format import intervention_key

FIELD = "channels"


_OPERATION_WORDS = {"zero": "zero-ablation", "mean": "mean-ablation (dataset_mean of run {run})",
                    "patch": "patching from run {run}", "add": "adding {times}{key} of run {run}",
                    "scale": "scaling by {scale}"}
_POSITION_WORDS = {"all": "", "first": ", first position", "last": ", last position",
                   "list": ", positions {indices}", "field": ', positions field("{field}")'}


def _operation_words(operation: ir.Operation) -> str:
    times = "" if operation.scale is None else f"{operation.scale} x "
    return _OPERATION_WORDS[operation.kind].format(run=operation.run, key=operation.key,
                                                   scale=operation.scale, times=times)


def _units_words(selection: Selection) -> str:
    units = selection.entry.intervention.channels
    noun = "KV heads" if selection.kv else "channels"
    if units is None:
        return "every channel"
    if units.kind == "list":
        return f"{noun} {list(units.indices)}"
    how_many = (str(units.count) if units.count is not None
                else f"{units.fraction * 100:g}%")
    if units.kind == "random":
        return f"{how_many} random {noun} (seed {units.seed})"
    return f"the {how_many} {units.kind} {units.metric} {noun}"


def _target_words(entry: InterventionEntry) -> str:
    part = {"site": "", "linear": " input", "norm": " output"}[entry.kind]
    head = "" if entry.head is None else f", head {entry.head}"
    return f"{entry.target}{part} at layer {entry.layer}{head}"


def _positions_words(positions: ir.Positions) -> str:
    return _POSITION_WORDS[positions.kind].format(indices=list(positions.indices),
                                                  field=positions.field)


def meaning(selection: Selection) -> str:
    """The intervention in words, for the manifest and the report."""
    entry = selection.entry
    return (f"{_operation_words(entry.intervention.operation)} of {_units_words(selection)} "
            f"of {_target_words(entry)}{_positions_words(entry.intervention.positions)}")


def intervention_results(selections: Mapping[str, Selection]
                         ) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Every intervention's selected units and its manifest description, by result key."""
    tensors: dict[str, torch.Tensor] = {}
    descriptions: dict[str, dict] = {}
    for selection in selections.values():
        entry = selection.entry
        key = intervention_key(entry.target, entry.layer, entry.head, FIELD)
        tensors[key] = selection.units.to(torch.int64).contiguous()
        descriptions[key] = {"kind": "intervention", "meaning": meaning(selection),
                             "target": entry.target, "layer": entry.layer, "head": entry.head,
                             "field": FIELD, "operation": entry.intervention.operation.kind,
                             "units": "kv_heads" if selection.kv else "channels"}
    return tensors, descriptions
