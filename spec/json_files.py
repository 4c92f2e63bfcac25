"""Reading the JSON object files expc is handed: checkpoint configs and indexes, tokenizer
files, checkpoint cursors, run manifests.

Each must hold one JSON object. A file that cannot be read, is not JSON, or holds something
else becomes one `Diagnostic` at that file (at the line and column of a syntax error),
named by what the caller says the file is, under the caller's diagnostic code.
"""

from __future__ import annotations

import json
from pathlib import Path

from expc.spec.diagnostics import fail


def load_json(text: str):
    """`json.loads`, with nesting deeper than the decoder can follow (a RecursionError
    in the standard library) reported as the syntax error it is to a reader."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def parse_json_object(text: str, *, path: str | Path, what: str, code: str) -> dict:
    """The JSON object in `text`, read from `path`."""
    try:
        value = load_json(text)
    except json.JSONDecodeError as exc:
        raise fail(path, f"{what} is not valid JSON: {exc.msg}", code=code, line=exc.lineno,
                   col=exc.colno) from None
    if not isinstance(value, dict):
        raise fail(path, f"{what} must hold a JSON object, found {type(value).__name__}",
                   code=code)
    return value


def read_json_object(path: str | Path, *, what: str, code: str) -> dict:
    """The JSON object in the UTF-8 file at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(path, f"cannot read {what}: {exc}", code=code) from None
    return parse_json_object(text, path=path, what=what, code=code)
