"""Text → `syntax.Document`: the LALR parser, comments, and named syntax errors.

The grammar is loaded once per process. Parse errors become one `Diagnostic` with a plain
message (named after lark's `match_examples` for the common mistakes) and the tokens that
would have fit. The conversion from lark's tree is non-recursive and nesting is bounded,
so no input — however deep, long or broken — can raise anything but `DiagnosticError`.
"""

from __future__ import annotations

import bisect
import functools
import os
import re

import lark
from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from expc.grammar import GRAMMAR_PATH
from expc.spec import syntax as sx
from expc.spec.diagnostics import Diagnostic, DiagnosticError, Span, error, fail
from expc.spec.ir import IndexSelector, Slice

MAX_NESTING = 16  # lists and calls inside values; no key needs more than two

# Common mistakes, named for lark's match_examples: the parser state of each example
# identifies the mistake when the same state shows up in a user's file.
SYNTAX_EXAMPLES: dict[str, list[str]] = {
    "missing `=` between a key and its value": [
        "experiment a { seed 0 }", "experiment a { data { limit 3 } }",
        "experiment a { capture x[1] { aggregate full } }",
        "experiment a { intervene x[1] { set zero } }",
    ],
    "missing value after `=`": [
        "experiment a { seed = }", "experiment a { data { limit = } }",
        "experiment a { seed = ,", "experiment a { data { limit = , } }",
    ],
    "statements belong inside an `experiment NAME { ... }` block": [
        "seed = 0", "capture x[1]", "importance l2_norm at m[1]", "data { limit = 1 }",
    ],
    "`importance` needs `at`: `importance METRIC at MODULE[layers]`": [
        "experiment a { importance l2_norm mlp.down_proj[*] }",
        "experiment a { importance l2_norm mlp }",
    ],
    "empty selector: write `[*]`, an index, a slice `a:b` or a list `1, 3`": [
        "experiment a { capture x[] }", "experiment a { capture x[1] of heads[] }",
    ],
    "a `{` is never closed: a block is missing its `}`": [
        "experiment a { seed = 0", "experiment a { data { limit = 1 }",
        "experiment a {",
    ],
    "an experiment needs a name: `experiment NAME { ... }`": [
        "experiment { }", "experiment extends b { }",
    ],
}

_TERMINAL_WORDS = {
    "NAME": "a name", "STRING": "a string", "NUMBER": "a number", "INT": "an integer",
    "$END": "end of file",
}


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(
        GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr", lexer="contextual",
        propagate_positions=True, maybe_placeholders=False, start=["start", "value"],
        cache=_table_cache() or False,
    )


def _table_cache() -> str | None:
    """Where lark keeps the built LALR tables between runs (it checks the grammar's hash).

    Building the tables costs more than checking a spec, so `expc check` reuses them. The
    file lives in the user's own cache folder, never in a shared temporary folder, since
    lark stores it as a pickle. None (no caching) when that folder cannot be written.
    """
    home = os.path.expanduser("~")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    if not os.path.isabs(base):  # no home folder: never litter the working directory
        return None
    folder = os.path.join(base, "expc")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    return os.path.join(folder, f"grammar-lark{lark.__version__}.cache")


def decode(data: bytes, path: str) -> str:
    """UTF-8 text of a spec file; a bad byte is a diagnostic at its line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fail(
            path, f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x})", code="encoding",
            line=line, col=col, help=["save the spec as UTF-8"]) from None


def parse(text: str, path: str = "<string>") -> sx.Document:
    """Parse a whole `.exp` file; raises `DiagnosticError` on the first syntax error."""
    try:
        tree = _parser().parse(text, start="start")
    except UnexpectedInput as exc:
        raise DiagnosticError(_syntax_diagnostic(exc, text, path)) from None
    _check_nesting(tree, path)
    items = _ToSyntax(path).convert(tree)
    lines = text.split("\n")
    return sx.Document(
        path=path, items=tuple(items), text=text,
        comments=tuple(_comment(tok, lines) for tok in _scan_comments(text)),
    )


def parse_value(text: str, path: str = "<--set>") -> sx.Value:
    """Parse one value (`8`, `"a/b"`, `mean(mask = last)`), as `--set key=value` gives it."""
    try:
        tree = _parser().parse(text, start="value")
    except UnexpectedInput as exc:
        raise DiagnosticError(_syntax_diagnostic(exc, text, path)) from None
    _check_nesting(tree, path)
    return _ToSyntax(path).convert(Tree("start", [tree]))[0]


_COMMENT_OR_STRING = re.compile(r"\"([^\"\\\n]|\\.)*\"|'([^'\\\n]|\\.)*'|#[^\n]*")


def _scan_comments(text: str) -> list[Token]:
    """`#` comments outside strings, as tokens with line and column (the parser skips them;
    lexer callbacks would tie the once-loaded grammar to one collecting list)."""
    found = []
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    for m in _COMMENT_OR_STRING.finditer(text):
        if not m.group(0).startswith("#"):
            continue
        line = bisect.bisect_right(line_starts, m.start())
        col = m.start() - line_starts[line - 1] + 1
        found.append(Token("COMMENT", m.group(0).rstrip("\r"), line=line, column=col))
    return found


def _comment(tok: Token, lines: list[str]) -> sx.Comment:
    before = lines[tok.line - 1][: tok.column - 1]
    return sx.Comment(line=tok.line, col=tok.column, text=str(tok).rstrip(),
                      trailing=bool(before.strip()))


def _check_nesting(tree: Tree, path: str) -> None:
    """Reject values nested deeper than MAX_NESTING before anything recurses over them."""
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in ("list", "call", "indexed"):
            depth += 1
            if depth > MAX_NESTING:
                raise fail(_meta_span(path, node.meta),
                           f"values nest more than {MAX_NESTING} levels deep", code="nesting",
                           help=("no setting takes nested lists; flatten the value",))
        stack.extend((c, depth) for c in node.children if isinstance(c, Tree))


def _meta_span(path: str, meta) -> Span:
    return Span(path=path, line=meta.line, col=meta.column,
                end_line=meta.end_line, end_col=meta.end_column)


def _tok_span(path: str, tok: Token) -> Span:
    return Span(path=path, line=tok.line, col=tok.column,
                end_line=tok.end_line, end_col=tok.end_column)


def unescape(literal: str) -> str:
    """The value of a quoted string literal; escapes as in Python (\\n, \\t, \\", \\uXXXX)."""
    body = literal[1:-1]
    simple = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0",
              "\\": "\\", '"': '"', "'": "'"}

    def one(m: re.Match) -> str:
        esc = m.group(1)
        if esc[0] == "u" and len(esc) == 5:
            return chr(int(esc[1:], 16))
        return simple.get(esc, "\\" + esc)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", one, body)


class _ToSyntax:
    """Lark tree → syntax nodes, bottom-up without recursion: one method per rule, called
    with the node's positions and its already converted children."""

    def __init__(self, path: str):
        self.path = path

    def convert(self, root: Tree) -> list:
        """The converted children of `root`."""
        done: dict[int, object] = {}
        for node in root.iter_subtrees():  # children always come before their parent
            children = [done.pop(id(c)) if isinstance(c, Tree) else c for c in node.children]
            done[id(node)] = children if node is root else getattr(self, node.data)(node.meta, children)
        return done[id(root)]

    def _span(self, meta) -> Span:
        return _meta_span(self.path, meta)

    # values -------------------------------------------------------------------------
    def string(self, meta, children):
        return sx.Str(value=unescape(str(children[0])), span=self._span(meta))

    def number(self, meta, children):
        text = str(children[0])
        try:
            value: int | float = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            raise fail(self._span(meta), f"number `{text[:20]}...` is too large",
                       code="range") from None
        return sx.Num(value=value, text=text, span=self._span(meta))

    def ident(self, meta, children):
        return sx.Ident(name="".join(str(c) for c in children), span=self._span(meta))

    def call(self, meta, children):
        name, *args = children
        return sx.Call(
            name=str(name), args=tuple(a for a in args if not isinstance(a, sx.KwArg)),
            kwargs=tuple(a for a in args if isinstance(a, sx.KwArg)), span=self._span(meta))

    def kwarg(self, meta, children):
        key, value = children
        return sx.KwArg(key=str(key), value=value, key_span=_tok_span(self.path, key),
                        span=self._span(meta))

    def list(self, meta, children):
        return sx.ListValue(items=tuple(children), span=self._span(meta))

    def indexed(self, meta, children):
        name, layers = children
        return sx.Indexed(name=str(name), layers=layers, span=self._span(meta))

    # selectors ----------------------------------------------------------------------
    def all_indices(self, meta, children):
        return IndexSelector(all=True, span=self._span(meta))

    def index_list(self, meta, children):
        return IndexSelector(items=tuple(item for item, _ in children),
                             item_spans=tuple(span for _, span in children), span=self._span(meta))

    def index(self, meta, children):
        return self._int(children[0]), self._span(meta)

    def slice(self, meta, children):
        start = stop = None
        seen_colon = False
        for c in children:
            if c.type == "COLON":
                seen_colon = True
            elif seen_colon:
                stop = self._int(c)
            else:
                start = self._int(c)
        return Slice(start=start, stop=stop), self._span(meta)

    def _int(self, tok: Token) -> int:
        if len(tok.lstrip("+-")) > 18:
            raise fail(_tok_span(self.path, tok), f"index `{str(tok)[:20]}` is too large",
                       code="range")
        return int(tok)

    def dotted(self, meta, children):
        return (".".join(str(c) for c in children), self._span(meta))

    def selector(self, meta, children):
        (name, span), *rest = children
        return name, span, (rest[0] if rest else None)

    def of_heads(self, meta, children):
        return ("heads", children[0])

    def vs_heads(self, meta, children):
        return ("vs", children[0])

    def as_name(self, meta, children):
        return ("as", str(children[0]), _tok_span(self.path, children[0]))

    def body(self, meta, children):
        return ("body", tuple(c for c in children if isinstance(c, sx.Assign)))

    # statements ---------------------------------------------------------------------
    def assign(self, meta, children):
        key, value = children
        return sx.Assign(key=str(key), value=value, key_span=_tok_span(self.path, key),
                         span=self._span(meta))

    def block(self, meta, children):
        name, lbrace, *assigns, _ = children
        return sx.BlockDecl(name=str(name), assigns=tuple(assigns), open_line=lbrace.line,
                            name_span=_tok_span(self.path, name), span=self._span(meta))

    def capture(self, meta, children):
        (site, site_span, layers), *rest = children
        parts = _tagged(rest)
        as_part = parts.get("as")
        return sx.CaptureStmt(
            site=site, site_span=site_span, layers=layers, heads=parts.get("heads"),
            name=as_part[0] if as_part else None, name_span=as_part[1] if as_part else None,
            body=parts.get("body") or None, span=self._span(meta))

    def importance(self, meta, children):
        metric, (module, module_span, layers), *rest = children
        parts = _tagged(rest)
        return sx.ImportanceStmt(
            metric=str(metric), module=module, layers=layers, heads=parts.get("heads"),
            body=parts.get("body") or None, metric_span=_tok_span(self.path, metric),
            module_span=module_span, span=self._span(meta))

    def intervene(self, meta, children):
        (target, target_span, layers), *rest = children
        parts = _tagged(rest)
        return sx.InterveneStmt(
            target=target, target_span=target_span, layers=layers, heads=parts.get("heads"),
            body=parts.get("body") or None, span=self._span(meta))

    def effect(self, meta, children):
        metric, *rest = children
        parts = _tagged(rest)
        as_part = parts.get("as")
        return sx.EffectStmt(
            metric=str(metric), heads=parts.get("heads"), reference=parts.get("vs"),
            name=as_part[0] if as_part else None, name_span=as_part[1] if as_part else None,
            body=parts.get("body") or None, metric_span=_tok_span(self.path, metric),
            span=self._span(meta))

    def extends(self, meta, children):
        return ("extends", str(children[0]), _tok_span(self.path, children[0]))

    def experiment(self, meta, children):
        name, *rest = children
        extends = rest.pop(0) if rest and isinstance(rest[0], tuple) else None
        lbrace, *statements, _ = rest
        return sx.ExperimentDecl(
            name=str(name), extends=extends[1] if extends else None,
            extends_span=extends[2] if extends else None, statements=tuple(statements),
            name_span=_tok_span(self.path, name), open_line=lbrace.line, span=self._span(meta))

    def include(self, meta, children):
        return sx.IncludeDecl(path=unescape(str(children[0])), span=self._span(meta))


def _tagged(parts: list) -> dict:
    out: dict = {}
    for part in parts:
        tag, *value = part
        out[tag] = value[0] if len(value) == 1 else tuple(value)
    return out


# syntax errors ------------------------------------------------------------------------
def _syntax_diagnostic(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    line, col, width = _error_place(exc, text)
    label = _example_label(exc)
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(text) else ""
        if ch in "\"'":
            message, help_ = "unterminated string", ["close the string on the same line"]
        else:
            message, help_ = f"unexpected character `{_printable(ch)}`", []
    else:
        found = _found(exc)
        message = f"syntax error: {label}" if label else f"syntax error: unexpected {found}"
        help_ = []
        expected = _expected(exc)
        if expected:
            help_.append("expected " + ", ".join(expected))
    return error(path, message, code="syntax", line=line, col=col, end_col=col + width,
                 help=help_)


def _example_label(exc: UnexpectedInput) -> str | None:
    """The name of the common mistake this error looks like, if any.

    lark's `match_examples` matches only when the parser stack has the example's exact
    depth (so only for a mistake in the first statement of a top-level block); the table
    of example states, keyed by the LALR state on top of the stack and the tokens that
    would fit, finds the same mistake anywhere.
    """
    if not isinstance(exc, UnexpectedToken | UnexpectedEOF) or exc.state is None:
        return None
    label = exc.match_examples(lambda t: _parser().parse(t, start="start"), SYNTAX_EXAMPLES,
                               use_accepts=True)
    return label or _example_states().get(_state_key(exc))


def _state_key(exc: UnexpectedInput) -> tuple:
    accepts = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or ()
    return exc.state.position, frozenset(accepts)


@functools.cache
def _example_states() -> dict[tuple, str]:
    table: dict[tuple, str] = {}
    for label, examples in SYNTAX_EXAMPLES.items():
        for example in examples:
            try:
                _parser().parse(example, start="start")
            except (UnexpectedToken, UnexpectedEOF) as exc:
                table.setdefault(_state_key(exc), label)
    return table


def _error_place(exc: UnexpectedInput, text: str) -> tuple[int, int, int]:
    token = getattr(exc, "token", None)
    if isinstance(token, Token) and token.type != "$END" and token.line is not None:
        return token.line, token.column, max(1, len(token.split("\n")[0]))
    if isinstance(exc, UnexpectedCharacters):
        return exc.line, exc.column, 1
    lines = text.split("\n")
    # end of file: point just past the last non-blank line
    last = len(lines)
    while last > 1 and not lines[last - 1].strip():
        last -= 1
    return last, len(lines[last - 1]) + 1, 1


def _found(exc: UnexpectedInput) -> str:
    token = getattr(exc, "token", None)
    if not isinstance(token, Token) or token.type == "$END":
        return "end of file"
    return f"`{_printable(str(token)[:30])}`"


def _expected(exc: UnexpectedInput) -> list[str]:
    names = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or ()
    words = set()
    for name in names:
        if name in _TERMINAL_WORDS:
            words.add(_TERMINAL_WORDS[name])
            continue
        try:
            pattern = _parser().get_terminal(name).pattern
        except KeyError:
            continue
        if pattern.type == "str":
            words.add(f"`{pattern.value}`")
    return sorted(words)


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
