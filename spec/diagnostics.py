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
        super().__init__("; ".join(d.message for d in self.diagnostics))


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


def _source_line(sources: Mapping[str, str], span: Span) -> str | None:
    text = sources.get(span.path)
    if text is None:
        try:
            text = Path(span.path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    lines = text.splitlines()
    if 1 <= span.line <= len(lines):
        return lines[span.line - 1]
    return None


def render_text(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str] | None = None) -> str:
    """`path:line:col: error: message`, the source line, a caret under the span, `help:` lines."""
    out: list[str] = []
    for d in diagnostics:
        s = d.span
        out.append(f"{s.path}:{s.line}:{s.col}: {d.severity}: {d.message}")
        line = _source_line(sources or {}, s)
        if line is not None:
            gutter = f"{s.line:>4} | "
            out.append(gutter + line)
            end = s.end_col if s.end_line == s.line else len(line) + 1
            width = max(1, end - s.col)
            out.append(" " * (len(gutter) - 2) + "| " + " " * (s.col - 1) + "^" * width)
        out.extend(f"  help: {h}" for h in d.help)
    return "\n".join(out)


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    """A JSON list of `{path, line, col, end_line, end_col, severity, code, message, help}`."""
    return json.dumps([d.to_json() for d in diagnostics], indent=2)


def _github_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def render_github(diagnostics: Iterable[Diagnostic]) -> str:
    """`::error file=PATH,line=L,col=C::MESSAGE` lines for GitHub Actions annotations."""
    lines = []
    for d in diagnostics:
        s = d.span
        msg = d.message + "".join(f" (help: {h})" for h in d.help)
        lines.append(
            f"::{d.severity} file={s.path},line={s.line},col={s.col},"
            f"endLine={s.end_line},endColumn={s.end_col}::{_github_escape(msg)}"
        )
    return "\n".join(lines)


RENDERERS = {"text": render_text, "json": render_json, "github": render_github}
