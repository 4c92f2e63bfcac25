"""The interventions of a run in words, each with a small table of the units it changed.

Every `intervene` statement of the IR is written back in the language
(`report/intervention_words.py`), followed by one row per head and layer it covers: the
manifest entry's `meaning` and the stored `intervention/.../channels` (how many units, the
first indices). Stored keys that no statement covers (a manifest without the IR) get a table
of their own, so nothing the run stored goes unshown.
"""

from __future__ import annotations

import torch

from expc.report.html_parts import esc, table
from expc.report.intervention_layout import InterventionNode, intervention_nodes
from expc.report.keys import forward_position
from expc.report.run_folder import RunFolder
from expc.spec.run_format import KeyInfo, parse_key

FIRST_INDICES = 10
HEADER = ("head", "layer", "what", "units", "count", "first indices")


def first_indices(units: torch.Tensor, k: int = FIRST_INDICES) -> str:
    """`3, 7, 9` or `3, 7, 9, … (1024 in all)`."""
    flat = units.flatten().tolist()
    shown = ", ".join(str(i) for i in flat[:k])
    return shown if len(flat) <= k else f"{shown}, … ({len(flat)} in all)"


def _row(folder: RunFolder, info: KeyInfo, units: torch.Tensor) -> tuple:
    entry = folder.entry(info.key)
    return ("-" if info.head is None else info.head, info.layer,
            entry.get("meaning") or info.key, entry.get("units") or info.field,
            units.numel(), first_indices(units))


def _owner(nodes: list[InterventionNode], info: KeyInfo) -> InterventionNode | None:
    return next((n for n in nodes if n.covers(info.name, info.head, info.layer)), None)


def intervention_tables(folder: RunFolder) -> str:
    """The interventions block (empty when the run has none)."""
    nodes = intervention_nodes(folder.manifest)
    infos = sorted((i for i in map(parse_key, folder.keys)
                    if i.kind == "intervention" and i.field == "channels"),
                   key=lambda i: (forward_position(i), i.key))
    if not nodes and not infos:
        return ""
    loaded = folder.tensors(i.key for i in infos)
    rows: dict[int | None, list[tuple]] = {}
    for info in infos:
        owner = _owner(nodes, info)
        rows.setdefault(None if owner is None else owner.index, []).append(
            _row(folder, info, loaded[info.key]))
    parts = []
    for node in nodes:
        parts.append(f"<p><code>{esc(node.statement)}</code></p>")
        node_rows = rows.get(node.index)
        parts.append(table(HEADER, node_rows) if node_rows
                     else "<p>No units stored for this statement.</p>")
    if rows.get(None):
        parts.append("<p>Stored interventions no statement of the IR names:</p>"
                     + table(HEADER, rows[None]))
    return "".join(parts)
