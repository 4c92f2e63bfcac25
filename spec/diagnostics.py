"""The one `Diagnostic` type for every user error, and its three renderings (contracts §2).

A bad spec, a malformed data line or a broken checkpoint all end up here: a message tied to
a file and a span, rendered as `path:line:col: error: message` with the source line and a
caret, as JSON, or as GitHub workflow commands. Lines and columns are 1-based; `end_col`
is exclusive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

SEVERITIES = ("error", "warning")


@attrs.frozen(kw_only=True, order=True)
class Span:
    """Where something sits in a file: 1-based line/col, `end_col` exclusive."""

    path: str
    line: int = 1
    col: int = 1
    end_line: int = attrs.field(default=attrs.Factory(lambda self: self.line, takes_self=True))
    end_col: int = attrs.field(default=attrs.Factory(lambda self: self.col + 1, takes_self=True))


@attrs.frozen(kw_only=True)
class Diagnostic:
    """A user-facing problem: what went wrong, where, and how to fix it."""

    span: Span
    message: str
    code: str
    severity: str = attrs.field(default="error", validator=attrs.validators.in_(SEVERITIES))
    help: tuple[str, ...] = ()

    def sort_key(self) -> tuple:
        return (self.span.path, self.span.line, self.span.col, self.code, self.message)

    def to_json(self) -> dict:
        s = self.span
        return {
            "path": s.path, "line": s.line, "col": s.col, "end_line": s.end_line,
            "end_col": s.end_col, "severity": self.severity, "code": self.code,
            "message": self.message, "help": list(self.help),
        }


class DiagnosticError(Exception):
    """Raised with one or more diagnostics; the CLI renders them and exits 1."""

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = (diagnostics,)
        self.diagnostics = normalize(diagnostics)
        super().__init__("; ".join(d.message for d in capped(self.diagnostics)))


def normalize(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """All diagnostics at once, sorted by place and de-duplicated."""
    return tuple(sorted(set(diagnostics), key=Diagnostic.sort_key))


def error(where: str | Path | Span | None, message: str, *, code: str, line: int = 1,
          col: int = 1, end_line: int | None = None, end_col: int | None = None,
          help: Iterable[str] = ()) -> Diagnostic:
    """An error diagnostic at `where`: an IR node's `Span` as it is (`<spec>` when the node
    has none), or a file path with the given line and columns."""
    if isinstance(where, Span):
        span = where
    elif where is None:
        span = Span(path="<spec>")
    else:
        span = Span(path=str(where), line=line, col=col,
                    end_line=line if end_line is None else end_line,
                    end_col=col + 1 if end_col is None else end_col)
    return Diagnostic(span=span, message=message, code=code, help=tuple(help))


def fail(where: str | Path | Span | None, message: str, *, code: str, line: int = 1,
         col: int = 1, end_line: int | None = None, end_col: int | None = None,
         help: Iterable[str] = ()) -> DiagnosticError:
    """The `DiagnosticError` of one `error(...)`, ready to raise."""
    return DiagnosticError(error(where, message, code=code, line=line, col=col,
                                 end_line=end_line, end_col=end_col, help=help))


MAX_SHOWN = 100  # diagnostics rendered one by one; the rest are counted in one line
_LINE_CHUNK = 1 << 16  # bytes of a source line kept (a longer one is skipped past in chunks)
_SCAN_LIMIT = 64 << 20  # bytes read at most to find quoted lines: a huge or binary file ends it
_SHOWN_WIDTH = 160  # characters of a long source line shown around the span


def capped(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """The first `MAX_SHOWN` diagnostics, then one saying how many more there are.

    Every renderer shows this, so 20 000 errors on one line print a screenful, not 200 MB.
    """
    diagnostics = tuple(diagnostics)
    if len(diagnostics) <= MAX_SHOWN:
        return diagnostics
    rest = diagnostics[MAX_SHOWN:]
    severity = "error" if any(d.severity == "error" for d in rest) else "warning"
    count = f"{len(rest):,}".replace(",", " ")
    more = Diagnostic(span=rest[0].span, severity=severity, code="truncated",
                      message=f"... and {count} more",
                      help=("fix these and check again to see the rest",))
    return (*diagnostics[:MAX_SHOWN], more)


class _SourceLines:
    """The source lines a render quotes, each file read once and only as far as needed.

    Reading is bounded: at most `_LINE_CHUNK` bytes of a line are kept and at most
    `_SCAN_LIMIT` bytes of a file are read, so a 400 MB binary shard shows a clipped
    "line 1" instead of being loaded whole. A path that cannot be opened (missing, a
    folder, a NUL byte in it) quotes nothing.
    """

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: Mapping[str, str]):
        wanted: dict[str, set[int]] = {}
        for d in diagnostics:
            wanted.setdefault(d.span.path, set()).add(d.span.line)
        self._lines: dict[tuple[str, int], str] = {}
        for path, numbers in wanted.items():
            text = sources.get(path)
            found = _lines_of_text(text, numbers) if text is not None else _lines_of_file(path, numbers)
            self._lines.update(((path, n), line) for n, line in found.items())

    def get(self, span: Span) -> str | None:
        return self._lines.get((span.path, span.line))


def _lines_of_text(text: str, numbers: set[int]) -> dict[int, str]:
    lines = text.split("\n", max(numbers))
    return {n: lines[n - 1].rstrip("\r") for n in numbers if 1 <= n <= len(lines)
            and (n < len(lines) or lines[n - 1])}


def _lines_of_file(path: str, numbers: set[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    last, scanned, number = max(numbers), 0, 0
    try:
        with open(path, "rb") as handle:
            while number < last and scanned < _SCAN_LIMIT:
                chunk = handle.readline(_LINE_CHUNK)
                if not chunk:
                    break
                number += 1
                scanned += len(chunk)
                if number in numbers:
                    found[number] = chunk.decode("utf-8", "replace").rstrip("\r\n")
                while not chunk.endswith(b"\n") and chunk and scanned < _SCAN_LIMIT:
                    chunk = handle.readline(_LINE_CHUNK)  # the rest of an over-long line
                    scanned += len(chunk)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return found
    return found


def _printable(text: str) -> str:
    """Control characters (a binary file's bytes, terminal escapes) as U+FFFD, one for one,
    so the caret below still lines up."""
    return "".join(ch if ch == "\t" or (ch >= " " and ch != "\x7f") else "\ufffd" for ch in text)


def _quote(line: str, col: int, end: int) -> tuple[str, int, int]:
    """At most `_SHOWN_WIDTH` characters of `line` around columns `col`..`end` (1-based,
    exclusive end), with `…` where it was cut; the columns moved to match."""
    if len(line) <= _SHOWN_WIDTH:
        return _printable(line), col, end
    start = max(0, min(col - 1 - _SHOWN_WIDTH // 4, len(line) - _SHOWN_WIDTH))
    stop = start + _SHOWN_WIDTH
    shown = ("…" if start else "") + line[start:stop] + ("…" if stop < len(line) else "")
    shift = start - (1 if start else 0)
    return _printable(shown), col - shift, min(end - shift, len(shown) + 1)


def render_text(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None) -> str:
    """`path:line:col: error: message`, the source line, a caret under the span, `help:` lines."""
    diagnostics = capped(diagnostics)
    lines = _SourceLines(diagnostics, sources or {})
    out: list[str] = []
    for d in diagnostics:
        s = d.span
        out.append(f"{s.path}:{s.line}:{s.col}: {d.severity}: {d.message}")
        line = lines.get(s) if d.code != "truncated" else None
        if line is not None:
            end = s.end_col if s.end_line == s.line else len(line) + 1
            shown, col, end = _quote(line, s.col, end)
            gutter = f"{s.line:>4} | "
            out.append(gutter + shown)
            width = max(1, end - col)
            out.append(" " * (len(gutter) - 2) + "| " + " " * max(0, col - 1) + "^" * width)
        out.extend(f"  help: {h}" for h in d.help)
    return "\n".join(out)


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    """A JSON list of `{path, line, col, end_line, end_col, severity, code, message, help}`."""
    return json.dumps([d.to_json() for d in capped(diagnostics)], indent=2)


def _github_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def render_github(diagnostics: Iterable[Diagnostic]) -> str:
    """`::error file=PATH,line=L,col=C::MESSAGE` lines for GitHub Actions annotations."""
    lines = []
    for d in capped(diagnostics):
        s = d.span
        msg = d.message + "".join(f" (help: {h})" for h in d.help)
        lines.append(
            f"::{d.severity} file={s.path},line={s.line},col={s.col},"
            f"endLine={s.end_line},endColumn={s.end_col}::{_github_escape(msg)}"
        )
    return "\n".join(lines)


RENDERERS = {"text": render_text, "json": render_json, "github": render_github}
