"""What a result key names, read from the key itself (contracts §3), and where it sits in the
forward pass.

Keys are the contract between `expc run` and everything that reads a run folder, so the
report and `expc diff` parse them rather than trusting any side channel: `capture/...`,
`importance/{metric}/{module}/{field}`, `meta/...`. Forward order (docs/run-folder.md) is
what lets `expc diff` name the first layer where two runs drift apart.
"""

from __future__ import annotations

import re

import attrs

_HEAD_PREFIX = re.compile(r"^head(\d+)/(.*)$")
_NAME_LAYER = re.compile(r"^(.+)_(\d+)$")
_MODULE_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
MODEL_WIDE_SITES = ("embed", "final_norm", "logits")


@attrs.frozen(kw_only=True)
class KeyInfo:
    """One result key, taken apart."""

    key: str
    kind: str  # "capture" | "importance" | "meta" | "other"
    name: str  # capture: the site or its `as` name; importance: the metric; meta: the field
    layer: int | None = None  # global layer number
    head: int | None = None  # Hydra head, None in the trunk or without a split
    suffix: str | None = None  # capture: e.g. "mask" for `capture/x_1.mask`
    module: str | None = None  # importance: module path without the head prefix
    field: str | None = None  # importance: "score" or an extra field

    @property
    def instance(self) -> str:
        """The importance module as written in keys, e.g. `head1/layers.3.mlp.down_proj`."""
        prefix = "" if self.head is None else f"head{self.head}/"
        return prefix + (self.module or "")

    @property
    def role(self) -> str:
        """The module with its layer taken out, e.g. `mlp.down_proj`."""
        return _MODULE_LAYER.sub("", self.module or "", count=1) or (self.module or "")


def _split_head(text: str) -> tuple[int | None, str]:
    match = _HEAD_PREFIX.match(text)
    if match is None:
        return None, text
    return int(match.group(1)), match.group(2)


def parse_key(key: str) -> KeyInfo:
    """Take a result key apart; keys outside the contract come back as kind `other`."""
    kind, _, rest = key.partition("/")
    if kind == "capture" and rest:
        head, rest = _split_head(rest)
        base, dot, suffix = rest.partition(".")
        match = _NAME_LAYER.match(base)
        name, layer = (match.group(1), int(match.group(2))) if match else (base, None)
        return KeyInfo(key=key, kind=kind, name=name, layer=layer, head=head,
                       suffix=suffix if dot else None)
    if kind == "importance" and rest.count("/") >= 2:
        metric, _, rest = rest.partition("/")
        module_path, _, field = rest.rpartition("/")
        head, module = _split_head(module_path)
        match = _MODULE_LAYER.search("." + module)
        layer = int(match.group(1)) if match else None
        return KeyInfo(key=key, kind=kind, name=metric, layer=layer, head=head,
                       module=module, field=field)
    if kind == "meta" and rest:
        return KeyInfo(key=key, kind=kind, name=rest)
    return KeyInfo(key=key, kind="other", name=key)


def forward_position(info: KeyInfo) -> tuple[int, ...]:
    """Sort key in forward order: data (meta), embed, trunk layers ascending, each head's
    layers ascending, final_norm, logits; anything unplaceable last."""
    head = -1 if info.head is None else info.head
    if info.kind == "meta":
        return (0,)
    if info.layer is not None:
        return (2, info.layer) if info.head is None else (3, info.head, info.layer)
    if info.kind == "capture" and info.name in MODEL_WIDE_SITES:
        return ({"embed": 1, "final_norm": 4, "logits": 5}[info.name], head)
    return (6,)


def place_label(info: KeyInfo) -> str:
    """Where a key sits, for people: `layer 3`, `head1 layer 3`, `head1 final_norm`, `embed`."""
    head = "" if info.head is None else f"head{info.head} "
    if info.kind == "meta":
        return "data (meta)"
    if info.layer is not None:
        return f"{head}layer {info.layer}"
    if info.kind == "capture" and info.name in MODEL_WIDE_SITES:
        return f"{head}{info.name}"
    return "unplaced"
