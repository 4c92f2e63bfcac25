"""Read a data source into raw samples, one at a time, with every problem tied to its place.

Every source kind of the `data` block shares one record check, so that every bad sample —
malformed JSON, a missing field, a value of the wrong type, a bad mask — becomes a
`Diagnostic` naming the data file and the line (a line file: `jsonl`, `text`, `tokens`;
with the column where known) or the row (a table file: `parquet`, `hf_dataset`, read by
`tables.read_table_samples`). Samples stream out as a generator: nothing but the current
line (or the current row group) is held here, and reading stops as soon as `limit` samples
are out. Blank lines are skipped in every line kind (a trailing newline is not a sample), so
sample `i` is the `i`-th non-blank line; each sample keeps its `Origin` for later messages.
`start` skips the first samples cheaply (a resumed run's earlier windows): skipped lines
are only tested for blankness by the rule `spec/data_size.count_samples` counts with.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from expc.spec.data_size import is_sample_line, strip_bom
from expc.spec.diagnostics import Diagnostic, DiagnosticError, error, fail
from expc.spec.json_files import load_json
from expc.spec.vocabulary import SOURCES

MAX_ERRORS = 20  # stop collecting after this many bad lines; the user fixes them in rounds


@attrs.frozen(kw_only=True, slots=True)
class Origin:
    """Where a sample was read: a line of a line file, or a row of a table file."""

    path: str
    line: int = 1  # 1-based line of a line file (1 for a table file)
    row: int | None = None  # 0-based row within a table file

    def error(self, message: str, *, code: str, **where) -> Diagnostic:
        """A diagnostic at this place (`where`: a column span within the line)."""
        at = "" if self.row is None else f"row {self.row}: "
        return error(self.path, at + message, code=code, line=self.line, **where)


@attrs.frozen(kw_only=True, slots=True)
class RawSample:
    """One sample as read: its text (jsonl, text, tables) or token ids (tokens), its mask
    field, and its token fields (`logit_diff`'s `correct`/`wrong`: a token id or a string,
    as written)."""

    origin: Origin
    text: str | None = None
    token_ids: list[int] | None = None
    mask: list[int] | None = None
    token_fields: dict[str, int | str] = attrs.field(factory=dict)

    @property
    def line(self) -> int:
        return self.origin.line


def check_arguments(*, kind: str, path: str, mask_field: str | None,
                    limit: int | None, token_fields: Sequence[str]) -> None:
    """What no source kind accepts: an unknown kind, a bad limit, fields of a `text` file."""
    if kind not in SOURCES:
        raise ValueError(f"unknown data source kind {kind!r}; expected one of {list(SOURCES)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    if kind == "text" and mask_field is not None:
        raise fail(path, f"a `text` source has no fields, so it cannot carry the mask field "
                   f"`{mask_field}`", code="data-mask-field",
                   help=["use a `jsonl` or `tokens` source whose objects hold the mask list"])
    if kind == "text" and token_fields:
        raise fail(path, f"a `text` source has no fields, so it cannot carry the token field "
                   f"`{token_fields[0]}`", code="data-token-field",
                   help=["use a `jsonl` or `tokens` source whose objects hold the field"])


def read_samples(*, kind: str, path: str | Path, field: str | None = None,
                 mask_field: str | None = None, limit: int | None = None,
                 token_fields: Sequence[str] = (), start: int = 0) -> Iterator[RawSample]:
    """Yield the samples of a line file in file order; raise `DiagnosticError` on bad lines.

    `field` defaults as in the language (`text` for jsonl, `input_ids` for tokens).
    `token_fields` are fields that hold one token per sample: a non-negative id or a string
    (turned into an id by `load.load_data`). Samples before `start` are skipped unread;
    `limit` counts from the file's first sample.
    All bad lines up to `MAX_ERRORS` (among the first `limit` samples) are reported at once.
    A missing file or a file with no samples is an error too.
    """
    path = str(path)
    check_arguments(kind=kind, path=path, mask_field=mask_field, limit=limit,
                    token_fields=token_fields)
    field = SOURCES[kind][1] if field is None else field
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
            if produced < start:
                produced += is_sample_line(raw, number)
                continue
            text = _decode(raw, path=path, line=number, problems=problems)
            if text is not None and not text.strip():
                continue
            produced += 1
            origin = Origin(path=path, line=number)
            sample = None if text is None else _parse_line(
                text, kind=kind, origin=origin, field=field, mask_field=mask_field,
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
    try:
        return strip_bom(raw, line).decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        problems.append(error(path, f"line is not valid UTF-8 ({exc.reason})",
                              code="data-encoding", line=line, col=exc.start + 1))
        return None


def _parse_line(text: str, *, kind: str, origin: Origin, field: str, mask_field: str | None,
                token_fields: Sequence[str], problems: list[Diagnostic]) -> RawSample | None:
    if kind == "text":
        return RawSample(origin=origin, text=text)
    try:
        record = load_json(text)
    except json.JSONDecodeError as exc:
        problems.append(origin.error(f"malformed JSON: {exc.msg}", code="data-json",
                                     col=exc.colno))
        return None
    if not isinstance(record, dict):
        problems.append(origin.error(f"expected a JSON object, found {_json_type(record)}",
                                     code="data-json"))
        return None
    return parse_record(record, text=text, kind=kind, origin=origin, field=field,
                        mask_field=mask_field, token_fields=token_fields, problems=problems)


def parse_record(record: dict, *, text: str | None, kind: str, origin: Origin, field: str,
                 mask_field: str | None, token_fields: Sequence[str],
                 problems: list[Diagnostic]) -> RawSample | None:
    """One record's sample (a JSON line's object, a table row), or None with its problems
    added; `text` is the line the record came from (for columns), None for a table row."""
    where = _FieldFinder(text=text, origin=origin, record=record, problems=problems)
    value = where.get(field)
    if value is None:
        return None
    if kind != "tokens":
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
    return RawSample(origin=origin, text=sample_text, token_ids=token_ids, mask=mask,
                     token_fields=tokens)


@attrs.define(kw_only=True)
class _FieldFinder:
    """Look up fields of one record and report problems at the field's column (a JSON
    line's; a table row has no columns to point at)."""

    text: str | None
    origin: Origin
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
        col = -1 if self.text is None else self.text.find(key) + 1
        span = {"col": col, "end_col": col + len(key)} if col > 0 else {}
        self.problems.append(self.origin.error(message, code="data-field", help=help, **span))


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
