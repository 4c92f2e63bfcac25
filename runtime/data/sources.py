"""Read a data file into raw samples, one line at a time, with every problem tied to its line.

The three source kinds of the `data` block (`jsonl`, `text`, `tokens`) share one reader so
that every bad line — malformed JSON, a missing field, a value of the wrong type, a bad mask —
becomes a `Diagnostic` naming the data file, the line number and (where known) the column.
Samples stream out as a generator: nothing but the current line is held here, and reading
stops as soon as `limit` samples are out. Blank lines are skipped in every kind (a trailing
newline is not a sample); each sample keeps its 1-based line number for later messages.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from expc.spec.diagnostics import Diagnostic, DiagnosticError, error, fail
from expc.spec.json_files import load_json
from expc.spec.vocabulary import SOURCES

MAX_ERRORS = 20  # stop collecting after this many bad lines; the user fixes them in rounds


@attrs.frozen(kw_only=True, slots=True)
class RawSample:
    """One sample as read: its text (jsonl, text) or token ids (tokens), its mask field, and
    its token fields (`logit_diff`'s `correct`/`wrong`: a token id or a string, as written)."""

    line: int
    text: str | None = None
    token_ids: list[int] | None = None
    mask: list[int] | None = None
    token_fields: dict[str, int | str] = attrs.field(factory=dict)


def read_samples(*, kind: str, path: str | Path, field: str | None = None,
                 mask_field: str | None = None, limit: int | None = None,
                 token_fields: Sequence[str] = ()) -> Iterator[RawSample]:
    """Yield the samples of a data file in file order; raise `DiagnosticError` on bad lines.

    `field` defaults as in the language (`text` for jsonl, `input_ids` for tokens).
    `token_fields` are fields that hold one token per sample: a non-negative id or a string
    (turned into an id by `load.load_data`).
    All bad lines up to `MAX_ERRORS` (among the first `limit` samples) are reported at once.
    A missing file or a file with no samples is an error too.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown data source kind {kind!r}; expected one of {list(SOURCES)}")
    field = SOURCES[kind][1] if field is None else field
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    path = str(path)
    if kind == "text" and mask_field is not None:
        raise fail(path, f"a `text` source has no fields, so it cannot carry the mask field "
                   f"`{mask_field}`", code="data-mask-field",
                   help=["use a `jsonl` or `tokens` source whose objects hold the mask list"])
    if kind == "text" and token_fields:
        raise fail(path, f"a `text` source has no fields, so it cannot carry the token field "
                   f"`{token_fields[0]}`", code="data-token-field",
                   help=["use a `jsonl` or `tokens` source whose objects hold the field"])
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise fail(path, f"cannot read data file: {exc.strerror or exc}",
                   code="data-file") from None
    problems: list[Diagnostic] = []
    produced = 0
    with handle:
        for number, raw in enumerate(handle, start=1):
            if limit is not None and produced >= limit:
                break
            text = _decode(raw, path=path, line=number, problems=problems)
            if text is not None and not text.strip():
                continue
            produced += 1
            sample = None if text is None else _parse_line(
                text, kind=kind, path=path, line=number, field=field, mask_field=mask_field,
                token_fields=token_fields, problems=problems)
            if len(problems) >= MAX_ERRORS:
                break
            if sample is not None and not problems:
                yield sample
    if problems:
        raise DiagnosticError(problems)
    if produced == 0:
        raise fail(path, "data file holds no samples", code="data-empty",
                   help=["every non-blank line is one sample"])


def _decode(raw: bytes, *, path: str, line: int, problems: list[Diagnostic]) -> str | None:
    if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        problems.append(error(path, f"line is not valid UTF-8 ({exc.reason})",
                              code="data-encoding", line=line, col=exc.start + 1))
        return None


def _parse_line(text: str, *, kind: str, path: str, line: int, field: str,
                mask_field: str | None, token_fields: Sequence[str],
                problems: list[Diagnostic]) -> RawSample | None:
    if kind == "text":
        return RawSample(line=line, text=text)
    try:
        record = load_json(text)
    except json.JSONDecodeError as exc:
        problems.append(error(path, f"malformed JSON: {exc.msg}", code="data-json",
                              line=line, col=exc.colno))
        return None
    if not isinstance(record, dict):
        problems.append(error(path, f"expected a JSON object, found {_json_type(record)}",
                              code="data-json", line=line))
        return None
    where = _FieldFinder(text=text, path=path, line=line, record=record, problems=problems)
    value = where.get(field)
    if value is None:
        return None
    if kind == "jsonl":
        if not isinstance(value, str):
            where.report(field, f"field `{field}` should be a string, found {_json_type(value)}")
            return None
        if not _encodable(value):
            where.report(field, f"field `{field}` holds a lone surrogate escape "
                                "(\\ud800-\\udfff), which is no character")
            return None
        sample_text, token_ids = value, None
    else:
        token_ids = _int_list(value, lowest=0, highest=None)
        if token_ids is None:
            where.report(field, f"field `{field}` should be a list of non-negative integer "
                                f"token ids, found {_describe(value, lowest=0, highest=None)}")
            return None
        sample_text = None
    mask = None
    if mask_field is not None:
        mask_value = where.get(mask_field)
        if mask_value is None:
            return None
        mask = _int_list(mask_value, lowest=0, highest=1)
        if mask is None:
            where.report(mask_field, f"mask field `{mask_field}` should be a list of 0/1, "
                                     f"found {_describe(mask_value, lowest=0, highest=1)}")
            return None
        if token_ids is not None and len(mask) != len(token_ids):
            where.report(mask_field, f"mask field `{mask_field}` has {len(mask)} entries but "
                                     f"`{field}` has {len(token_ids)} tokens")
            return None
    tokens = {}
    for name in token_fields:
        value = where.get(name)
        if value is None:
            return None
        if not (isinstance(value, str) or (isinstance(value, int)
                                           and not isinstance(value, bool) and value >= 0)):
            found = (json.dumps(value) if isinstance(value, (int, float))
                     and not isinstance(value, bool) else _json_type(value))
            where.report(name, f"field `{name}` should hold one token: a non-negative token "
                               f"id or a string, found {found}")
            return None
        tokens[name] = value
    return RawSample(line=line, text=sample_text, token_ids=token_ids, mask=mask,
                     token_fields=tokens)


@attrs.define(kw_only=True)
class _FieldFinder:
    """Look up fields of one JSON line and report problems at the field's column."""

    text: str
    path: str
    line: int
    record: dict
    problems: list[Diagnostic]

    def get(self, name: str):
        if name in self.record and self.record[name] is not None:
            return self.record[name]
        found = "null" if name in self.record else "missing"
        close = difflib.get_close_matches(name, [str(k) for k in self.record], n=1)
        hints = [f"did you mean `{close[0]}`?"] if close else []
        if not close and self.record:
            hints.append("fields on this line: " + ", ".join(f"`{k}`" for k in self.record))
        self.report(name, f"field `{name}` is {found}", help=hints)
        return None

    def report(self, name: str, message: str, *, help: list[str] = ()) -> None:
        key = json.dumps(name)
        col = self.text.find(key) + 1
        span = {"col": col, "end_col": col + len(key)} if col > 0 else {}
        self.problems.append(error(self.path, message, code="data-field", line=self.line,
                                   help=help, **span))


def _int_list(value, *, lowest: int, highest: int | None) -> list[int] | None:
    """`value` if it is a list of ints in `[lowest, highest]`, else None."""
    if not isinstance(value, list) or _first_bad_item(value, lowest, highest) is not _NONE:
        return None
    return value


_NONE = object()


def _first_bad_item(items: list, lowest: int, highest: int | None):
    for item in items:
        if (isinstance(item, bool) or not isinstance(item, int) or item < lowest
                or (highest is not None and item > highest)):
            return item
    return _NONE


def _encodable(text: str) -> bool:
    """Whether `text` is real Unicode: JSON may escape lone surrogates, which no tokenizer
    (and no UTF-8 file) can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _describe(value, *, lowest: int, highest: int | None) -> str:
    if isinstance(value, list):
        return f"a list containing {json.dumps(_first_bad_item(value, lowest, highest))}"
    return _json_type(value)
