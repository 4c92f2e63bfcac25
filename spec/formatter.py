"""`expc fmt`: one canonical layout for `.exp` files, comments kept, idempotent.

The layout is the quickstart's: four-space indents, one statement per line, `=` aligned
within a run of settings, `{` bodies aligned within a run of capture, importance,
intervene or effect statements (and metric names padded so `at` lines up), trailing comments from column 42
(further right when code is longer), single blank lines kept where the author put them.
Comments stay with the line they followed or preceded. `parse(format_text(x)) ==
parse(x)` up to spans: only layout changes.
"""

from __future__ import annotations

import json

import attrs

from expc.spec import syntax as sx
from expc.spec.parser import parse

INDENT = "    "
COMMENT_COLUMN = 41  # 0-based: trailing comments start in column 42, as in the quickstart


def format_text(text: str, path: str = "<string>") -> str:
    """The canonical form of a spec; raises `DiagnosticError` if it does not parse."""
    doc = parse(text, path)
    return _Printer(doc).run()


# values -------------------------------------------------------------------------------
def format_value(value: sx.Value) -> str:
    if isinstance(value, sx.Str):
        return json.dumps(value.value, ensure_ascii=False)
    if isinstance(value, sx.Num):
        return value.text
    if isinstance(value, sx.Ident):
        return value.name
    if isinstance(value, sx.Call):
        args = [format_value(a) for a in value.args]
        args += [f"{kw.key} = {format_value(kw.value)}" for kw in value.kwargs]
        return f"{value.name}({', '.join(args)})"
    if isinstance(value, sx.Indexed):
        return f"{value.name}[{value.layers.text()}]"
    return "[" + ", ".join(format_value(v) for v in value.items) + "]"


def _body_inline(body: tuple[sx.Assign, ...]) -> str:
    return "{ " + ", ".join(f"{a.key} = {format_value(a.value)}" for a in body) + " }"


# lines --------------------------------------------------------------------------------
_HEADED = ("capture", "intervene", "effect")  # `HEAD { body }`: bodies align within a run


def _selector(st: sx.CaptureStmt | sx.InterveneStmt | sx.EffectStmt) -> str:
    """` of heads[...]`, ` vs heads[...]` and ` as NAME`, as far as the statement has them."""
    text = f" of heads[{st.heads.text()}]" if st.heads else ""
    reference = getattr(st, "reference", None)
    text += f" vs heads[{reference.text()}]" if reference else ""
    name = getattr(st, "name", None)
    return text + (f" as {name}" if name else "")


@attrs.define
class _Line:
    """One output line; `kind` and `cells` drive alignment with its neighbours."""

    depth: int
    kind: str  # assign | capture | importance | intervene | effect | other | blank
    cells: tuple[str, ...] = ()
    comment: str | None = None

    def code(self, widths: dict[int, int]) -> str:
        c = self.cells
        if self.kind == "assign":
            key, value = c
            text = f"{key:<{widths.get(0, 0)}} = {value}"
        elif self.kind in _HEADED:
            head, body = c
            text = f"{head:<{widths.get(1, 0)}} {body}" if body else head
        elif self.kind == "importance":
            metric, module, body = c
            head = f"importance {metric:<{widths.get(0, 0)}} at {module}"
            text = f"{head:<{widths.get(1, 0)}} {body}" if body else head
        else:
            text = c[0] if c else ""
        return (INDENT * self.depth + text) if text else ""


def _widths(run: list[_Line]) -> dict[int, int]:
    """Column widths shared by a run of lines of one kind."""
    kind = run[0].kind
    if kind == "assign":
        return {0: max(len(l.cells[0]) for l in run)}
    if kind in _HEADED:
        return {1: max((len(l.cells[0]) for l in run if l.cells[1]), default=0)}
    if kind == "importance":
        metric = max(len(l.cells[0]) for l in run)
        heads = [len(f"importance {l.cells[0]:<{metric}} at {l.cells[1]}") for l in run if l.cells[2]]
        return {0: metric, 1: max(heads, default=0)}
    return {}


def _render(lines: list[_Line]) -> str:
    codes: list[str] = []
    i = 0
    while i < len(lines):  # runs of same-kind lines at one depth share column widths
        j = i + 1
        while (j < len(lines) and lines[i].kind in ("assign", "importance", *_HEADED)
               and lines[j].kind == lines[i].kind and lines[j].depth == lines[i].depth):
            j += 1
        widths = _widths(lines[i:j])
        codes.extend(l.code(widths) for l in lines[i:j])
        i = j
    out: list[str] = []
    i = 0
    while i < len(lines):  # comment columns are shared by a paragraph (no blank line)
        j = i
        while j < len(lines) and lines[j].kind != "blank":
            j += 1
        with_comment = [len(codes[k]) for k in range(i, j) if lines[k].comment and codes[k]]
        column = max([COMMENT_COLUMN, *(n + 2 for n in with_comment)])
        for k in range(i, j):
            comment = lines[k].comment
            if comment and codes[k]:
                out.append(f"{codes[k]:<{column}}{comment}")
            else:
                out.append(codes[k] or (INDENT * lines[k].depth + comment if comment else ""))
        if j < len(lines):
            out.append("")
        i = j + 1
    return "\n".join(out).rstrip("\n") + "\n"


class _Printer:
    """Walks the document in source order, placing each comment beside or above its code."""

    def __init__(self, doc: sx.Document):
        self.doc = doc
        self.source_lines = doc.text.split("\n")
        self.comments = list(doc.comments)
        self.lines: list[_Line] = []
        self.last_source_line = 0  # last source line emitted so far
        self.just_opened = True  # no blank line right after `{` (or at the top of the file)

    def run(self) -> str:
        for n, item in enumerate(self.doc.items):
            if isinstance(item, sx.IncludeDecl):
                self._emit(0, "other", (f"include {json.dumps(item.path, ensure_ascii=False)}",),
                           item.span.line, item.span.end_line)
            else:
                if n > 0:
                    self._blank()
                self._experiment(item)
        self._flush_comments(len(self.source_lines) + 1, depth=0)
        return _render(self.lines) if self.lines else ""

    # placement ----------------------------------------------------------------------
    def _blank(self) -> None:
        if self.lines and self.lines[-1].kind != "blank":
            self.lines.append(_Line(depth=0, kind="blank"))

    def _gap_before(self, line: int) -> bool:
        """Whether the source has a blank line between the last emitted line and `line`."""
        return any(not self.source_lines[k - 1].strip()
                   for k in range(self.last_source_line + 1, min(line, len(self.source_lines) + 1)))

    def _flush_comments(self, before_line: int, depth: int) -> None:
        """Own-line comments above `before_line`, each on its own line at `depth`."""
        while self.comments and self.comments[0].line < before_line:
            c = self.comments.pop(0)
            if c.trailing and self.lines and c.line <= self.last_source_line:
                self._attach(c)
                continue
            if self._gap_before(c.line) and not self.just_opened:
                self._blank()
            self.lines.append(_Line(depth=depth, kind="other", comment=c.text))
            self.last_source_line = c.line
            self.just_opened = False

    def _attach(self, c: sx.Comment) -> None:
        target = next(l for l in reversed(self.lines) if l.kind != "blank")
        target.comment = c.text if not target.comment else f"{target.comment}  {c.text}"

    def _emit(self, depth: int, kind: str, cells: tuple[str, ...], first: int, last: int,
              *, closing: bool = False) -> None:
        self._flush_comments(first, depth + (1 if closing else 0))
        inside = []  # comments within a multi-line element, before its last line
        while self.comments and self.comments[0].line < last:
            inside.append(self.comments.pop(0))
        if not closing and self._gap_before(first) and not self.just_opened:
            self._blank()
        self.lines.extend(_Line(depth=depth, kind="other", comment=c.text)
                          for c in inside if not c.trailing)
        self.lines.append(_Line(depth=depth, kind=kind, cells=cells))
        self.last_source_line = max(self.last_source_line, last)
        for c in inside:
            if c.trailing:
                self._attach(c)
        # a comment on the last line waits: a later element may share that line
        self.just_opened = False

    # structure ----------------------------------------------------------------------
    def _open(self, depth: int, header: str, first: int, open_line: int) -> None:
        self._emit(depth, "other", (header + " {",), first, open_line)
        self.just_opened = True

    def _close(self, depth: int, line: int) -> None:
        self._emit(depth, "other", ("}",), line, line, closing=True)

    def _experiment(self, e: sx.ExperimentDecl) -> None:
        header = f"experiment {e.name}" + (f" extends {e.extends}" if e.extends else "")
        self._open(0, header, e.span.line, e.open_line)
        for st in e.statements:
            self._statement(st, 1)
        self._close(0, e.span.end_line)

    def _statement(self, st: sx.Statement, depth: int) -> None:
        if isinstance(st, sx.Assign):
            self._assign(st, depth)
        elif isinstance(st, sx.BlockDecl):
            self._open(depth, st.name, st.span.line, st.open_line)
            for a in st.assigns:
                self._assign(a, depth + 1)
            self._close(depth, st.span.end_line)
        elif isinstance(st, sx.CaptureStmt):
            head = f"capture {st.site}" + (f"[{st.layers.text()}]" if st.layers else "")
            self._with_body(st, depth, "capture", (head + _selector(st),))
        elif isinstance(st, sx.InterveneStmt):
            head = f"intervene {st.target}" + (f"[{st.layers.text()}]" if st.layers else "")
            self._with_body(st, depth, "intervene", (head + _selector(st),))
        elif isinstance(st, sx.EffectStmt):
            self._with_body(st, depth, "effect", (f"effect {st.metric}" + _selector(st),))
        else:
            module = st.module + (f"[{st.layers.text()}]" if st.layers else "")
            module += f" of heads[{st.heads.text()}]" if st.heads else ""
            self._with_body(st, depth, "importance", (st.metric, module))

    def _assign(self, a: sx.Assign, depth: int) -> None:
        self._emit(depth, "assign", (a.key, format_value(a.value)), a.span.line, a.span.end_line)

    def _with_body(self, st: sx.CaptureStmt | sx.ImportanceStmt | sx.InterveneStmt
                   | sx.EffectStmt, depth: int, kind: str, head: tuple[str, ...]) -> None:
        body = st.body or ()
        if not body or st.span.line == st.span.end_line:
            cells = (*head, _body_inline(body) if body else "")
            self._emit(depth, kind, cells, st.span.line, st.span.end_line)
            return
        text = head[0] if kind in _HEADED else f"importance {head[0]} at {head[1]}"
        self._open(depth, text, st.span.line, max(st.span.line, body[0].span.line - 1))
        for a in body:
            self._assign(a, depth + 1)
        self._close(depth, st.span.end_line)
