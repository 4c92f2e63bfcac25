"""An `intervene` statement of the IR written back in the language, for people.

The manifest keeps the IR as `spec.to_json` writes it (spans dropped), so the report shows
each statement as it would be written: `intervene mlp.down_proj[3] of heads[1] { set = zero,
channels = lowest(run = "runs/scores", metric = channel_contribution, fraction = 0.25) }`.
Anything missing or malformed in a doctored manifest is left out, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


def _quoted(value: object) -> str:
    return json.dumps(str(value))


def _operation(op: Mapping) -> str:
    kind, run, scale = op.get("kind"), op.get("run"), op.get("scale")
    if kind == "zero":
        return "set = zero"
    if kind in ("mean", "patch"):
        return f"set = {kind}(run = {_quoted(run)})"
    if kind == "add":
        text = f"add = vector(run = {_quoted(run)}, key = {_quoted(op.get('key'))})"
        return text if scale is None else f"{text}, scale = {scale:g}"
    if kind == "scale":
        return f"scale = {scale:g}" if isinstance(scale, (int, float)) else "scale"
    return str(kind)


def _units(units: Mapping) -> str:
    kind = units.get("kind")
    if kind == "list":
        return f"[{', '.join(str(i) for i in units.get('indices') or ())}]"
    how_many = (f"count = {units['count']}" if units.get("count") is not None
                else f"fraction = {units.get('fraction')}")
    if kind == "random":
        return f"random({how_many}, seed = {units.get('seed', 0)})"
    return (f"{kind}(run = {_quoted(units.get('run'))}, metric = {units.get('metric')}, "
            f"{how_many})")


def _positions(positions: Mapping) -> str | None:
    kind = positions.get("kind")
    if kind in (None, "all"):
        return None
    if kind == "list":
        return f"[{', '.join(str(i) for i in positions.get('indices') or ())}]"
    if kind == "field":
        return f"field({_quoted(positions.get('field'))})"
    return str(kind)


def statement(node: Mapping) -> str:
    """The statement in the language's words."""
    heads = node.get("heads")
    of_heads = "" if heads is None else f" of heads[{heads}]"
    parts = [_operation(node.get("operation") or {})]
    if isinstance(node.get("channels"), Mapping):
        parts.append(f"channels = {_units(node['channels'])}")
    positions = _positions(node.get("positions") or {})
    if positions is not None:
        parts.append(f"positions = {positions}")
    return (f"intervene {node.get('target')}[{node.get('layers')}]{of_heads} "
            f"{{ {', '.join(parts)} }}")
