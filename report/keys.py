"""Where a result key sits in the forward pass, for the report and `expc diff`.

Keys are taken apart by the run format's parser (`expc.spec.run_format.parse_key`), never
trusted from a side channel; this module only places a parsed key: forward order
(docs/run-folder.md) is what lets `expc diff` name the first layer where two runs drift
apart, and `place_label` says where a key sits in words. An intervention sits at its layer
(and head), before that layer's captures: they see the value it changed. Effects compare the
heads' outputs, so they come after the logits.
"""

from __future__ import annotations

from expc.spec.run_format import KeyInfo
from expc.spec.vocabulary import MODEL_SITES

_MODEL_SITE_POSITIONS = {"embed": 1, "final_norm": 4, "logits": 5}  # around layers (2, 3)
_EFFECTS, _UNPLACED = 6, 7


def forward_position(info: KeyInfo) -> tuple[int, ...]:
    """Sort key in forward order: data (meta), embed, trunk layers ascending, each head's
    layers ascending (an intervention before the layer's other keys), final_norm, logits,
    effects; anything unplaceable last."""
    head = -1 if info.head is None else info.head
    if info.kind == "meta":
        return (0,)
    if info.layer is not None:
        within = 0 if info.kind == "intervention" else 1
        return ((2, info.layer, within) if info.head is None
                else (3, info.head, info.layer, within))
    if info.kind == "capture" and info.name in MODEL_SITES:
        return (_MODEL_SITE_POSITIONS[info.name], head)
    if info.kind == "effect":
        return (_EFFECTS, head)
    return (_UNPLACED,)


def place_label(info: KeyInfo) -> str:
    """Where a key sits, for people: `layer 3`, `head1 layer 3`, `head1 final_norm`, `embed`,
    `head1 effect kl`."""
    head = "" if info.head is None else f"head{info.head} "
    if info.kind == "meta":
        return "data (meta)"
    if info.layer is not None:
        return f"{head}layer {info.layer}"
    if info.kind == "capture" and info.name in MODEL_SITES:
        return f"{head}{info.name}"
    if info.kind == "effect":
        return f"{head}effect {info.name}"
    return "unplaced"
