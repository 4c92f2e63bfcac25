"""The IR as plain JSON data, for `expc compile --emit ir` and the run manifest.

Spans are left out; selectors appear as written (`"*"`, `"-1"`, `"1:3, 5"`), so the JSON
reads like the spec it came from.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from expc.spec import ir


def to_json(experiment: ir.Experiment) -> dict[str, Any]:
    """A JSON-ready dict of the resolved experiment (after extends, include and --set)."""
    return _convert(experiment)


def _convert(value: Any) -> Any:
    if isinstance(value, ir.IndexSelector):
        return value.text()
    if attrs.has(type(value)):
        return {f.name: _params(getattr(value, f.name)) if f.name == "params"
                else _convert(getattr(value, f.name))
                for f in attrs.fields(type(value)) if not f.name.endswith("span")}
    if isinstance(value, tuple):
        return [_convert(v) for v in value]
    return value


def _params(params: tuple[ir.Param, ...]) -> dict[str, Any]:
    return {p.name: p.value for p in params}


def to_text(data: Any, indent: int = 0) -> str:
    """The JSON data of `to_json` as indented `key: value` lines, for people."""
    pad = "  " * indent
    if isinstance(data, dict):
        lines = []
        for key, value in data.items():
            if isinstance(value, dict | list) and value:
                lines.append(f"{pad}{key}:")
                lines.append(to_text(value, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(value)}")
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(f"{pad}- {to_text(item, indent + 1).lstrip()}" for item in data)
    return pad + _scalar(data)


def _scalar(value: Any) -> str:
    if value == {} or value == []:
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value, ensure_ascii=False)
