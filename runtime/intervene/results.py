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


def _operation_words(operation: ir.Operation) -> str:
    if operation.kind == "zero":
        return "zero-ablation"
    if operation.kind == "mean":
        return f"mean-ablation (dataset_mean of run {operation.run})"
    if operation.kind == "patch":
        return f"patching from run {operation.run}"
    if operation.kind == "add":
        scale = "" if operation.scale is None else f"{operation.scale} x "
        return f"adding {scale}{operation.key} of run {operation.run}"
    return f"scaling by {operation.scale}"


def _units_words(selection: Selection) -> str:
    units = selection.entry.intervention.channels
    noun = "KV heads" if selection.kv else "channels"
    if units is None:
        return f"every {noun[:-1]}" if selection.kv else "every channel"
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
    if positions.kind == "all":
        return ""
    if positions.kind == "list":
        return f", positions {list(positions.indices)}"
    if positions.kind == "field":
        return f', positions field("{positions.field}")'
    return f", {positions.kind} position"


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
