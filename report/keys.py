"""Where a result key sits in the forward pass, for the report and `expc diff`.

Keys are taken apart by the run format's parser (`expc.spec.run_format.parse_key`), never
trusted from a side channel; this module only places a parsed key: forward order
(docs/run-folder.md) is what lets `expc diff` name the first layer where two runs drift
apart, and `place_label` says where a key sits in words.
"""

from __future__ import annotations

from expc.spec.run_format import KeyInfo
from expc.spec.vocabulary import MODEL_SITES

_MODEL_SITE_POSITIONS = {"embed": 1, "final_norm": 4, "logits": 5}  # around layers (2, 3)


def forward_position(info: KeyInfo) -> tuple[int, ...]:
    """Sort key in forward order: data (meta), embed, trunk layers ascending, each head's
    layers ascending, final_norm, logits; anything unplaceable last."""
    head = -1 if info.head is None else info.head
    if info.kind == "meta":
        return (0,)
    if info.layer is not None:
        return (2, info.layer) if info.head is None else (3, info.head, info.layer)
    if info.kind == "capture" and info.name in MODEL_SITES:
        return (_MODEL_SITE_POSITIONS[info.name], head)
    return (6,)


def place_label(info: KeyInfo) -> str:
    """Where a key sits, for people: `layer 3`, `head1 layer 3`, `head1 final_norm`, `embed`."""
    head = "" if info.head is None else f"head{info.head} "
    if info.kind == "meta":
        return "data (meta)"
    if info.layer is not None:
        return f"{head}layer {info.layer}"
    if info.kind == "capture" and info.name in MODEL_SITES:
        return f"{head}{info.name}"
    return "unplaced"
