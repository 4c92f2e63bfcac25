"""Includes, `extends` and `--set`: from files on disk to one merged declaration.

- `include "x.exp"` resolves against the including file's folder; an include cycle is an
  error at the `include` that closes it; a file included twice is read once.
- `experiment b extends a { ... }` starts from `a` and overrides: a setting replaces the
  setting, a block merges key by key, a capture replaces every capture of `a` that
  produces the same name (`as` name or site), an importance replaces those of `a` with the
  same metric and module, an intervention those on the same target with the same layers
  and heads as written, an effect those with the same name (`as` name or metric);
  everything else is added.
- `--set key.path=value` sets `seed`, `data.limit`, `hydra.trunk`, `capture.NAME.aggregate`,
  `importance.METRIC.PARAM`, `effect.NAME.PARAM`, `intervene.TARGET.KEY` (in every
  intervention on TARGET, e.g. `intervene.mlp.down_proj.scale=2`) ... on the merged
  declaration before it is checked, so an override meets exactly the checks a value
  written in the file meets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import attrs

from expc.spec import syntax as sx
from expc.spec import vocabulary as vocab
from expc.spec.diagnostics import Diagnostic, DiagnosticError, Span, error, fail
from expc.spec.parser import decode, parse, parse_value
from expc.spec.suggest import did_you_mean, one_of

OVERRIDE_PATH = "--set"
_STRING_KEYS = {("model",), ("output", "dir")}


@attrs.define
class Workspace:
    """Every document reachable from the root file, and the experiments they declare."""

    root: sx.Document
    experiments: dict[str, sx.ExperimentDecl] = attrs.field(factory=dict)
    diagnostics: list[Diagnostic] = attrs.field(factory=list)


def read_document(path: str) -> sx.Document:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise fail(path, f"cannot read `{path}`: {exc.strerror}", code="io") from None
    return parse(decode(data, path), path)


def load_workspace(path: str) -> Workspace:
    """Read `path` and its includes; raises `DiagnosticError` only if `path` itself fails."""
    root = read_document(path)
    ws = Workspace(root=root)
    _add_document(ws, root, stack=(os.path.realpath(path),), seen=set())
    return ws


def _add_document(ws: Workspace, doc: sx.Document, *, stack: tuple[str, ...], seen: set[str]) -> None:
    for item in doc.items:
        if isinstance(item, sx.IncludeDecl):
            _include(ws, doc, item, stack=stack, seen=seen)
            continue
        first = ws.experiments.get(item.name)
        if first is not None:
            ws.diagnostics.append(error(
                item.name_span, f"experiment `{item.name}` is defined twice", code="duplicate",
                help=(f"first defined at {first.name_span.path}:{first.name_span.line}",)))
            continue
        ws.experiments[item.name] = item
        ws.diagnostics.extend(_duplicates(item))


def _include(ws: Workspace, doc: sx.Document, inc: sx.IncludeDecl, *, stack: tuple[str, ...],
             seen: set[str]) -> None:
    target = os.path.normpath(os.path.join(os.path.dirname(doc.path), inc.path))
    real = os.path.realpath(target)
    if real in stack:
        ws.diagnostics.append(error(
            inc.span, f"include cycle: `{inc.path}` includes this file again",
            code="include-cycle", help=("remove one of the includes",)))
        return
    if real in seen:
        return
    seen.add(real)
    if not os.path.isfile(target):
        ws.diagnostics.append(error(
            inc.span, f"included file `{target}` does not exist", code="include",
            help=("an include resolves against the including file's folder",)))
        return
    try:
        included = read_document(target)
    except DiagnosticError as exc:
        ws.diagnostics.extend(exc.diagnostics)
        return
    _add_document(ws, included, stack=(*stack, real), seen=seen)


def _duplicates(decl: sx.ExperimentDecl) -> list[Diagnostic]:
    """Keys, blocks and body keys set twice within one declaration."""
    out: list[Diagnostic] = []

    def scan(assigns_or_blocks: Sequence, where: str) -> None:
        first: dict[str, Span] = {}
        for node in assigns_or_blocks:
            name, span = (node.key, node.key_span) if isinstance(node, sx.Assign) else (
                node.name, node.name_span)
            if name in first:
                out.append(error(span, f"duplicate key `{name}` in {where}", code="duplicate",
                                 help=(f"first set at line {first[name].line}; keep one",)))
            else:
                first[name] = span

    top = [s for s in decl.statements if isinstance(s, sx.Assign | sx.BlockDecl)]
    scan(top, f"experiment `{decl.name}`")
    for st in decl.statements:
        if isinstance(st, sx.BlockDecl):
            scan(st.assigns, f"`{st.name}`")
        elif isinstance(st, sx.CaptureStmt | sx.ImportanceStmt | sx.InterveneStmt
                        | sx.EffectStmt) and st.body:
            scan(st.body, "this statement")
    return out


def flatten(ws: Workspace, name: str) -> tuple[sx.ExperimentDecl | None, list[Diagnostic]]:
    """The declaration of `name` with its `extends` chain merged in."""
    return _flatten(ws, ws.experiments[name], ())


def _flatten(ws: Workspace, decl: sx.ExperimentDecl, chain: tuple[str, ...]
             ) -> tuple[sx.ExperimentDecl | None, list[Diagnostic]]:
    if decl.extends is None:
        return decl, []
    if decl.extends in (*chain, decl.name):
        return None, [error(
            decl.extends_span, f"extends cycle: {' -> '.join((*chain, decl.name, decl.extends))}",
            code="extends-cycle")]
    base = ws.experiments.get(decl.extends)
    if base is None:
        return None, [error(
            decl.extends_span, f"unknown experiment `{decl.extends}`", code="unknown",
            help=did_you_mean(decl.extends, [n for n in ws.experiments if n != decl.name])
            or ("define it in this file or `include` the file that does",))]
    merged_base, diags = _flatten(ws, base, (*chain, decl.name))
    if merged_base is None:
        return None, diags
    return attrs.evolve(decl, extends=None,
                        statements=merge(merged_base.statements, decl.statements)), diags


def merge(base: Sequence[sx.Statement], child: Sequence[sx.Statement]) -> tuple[sx.Statement, ...]:
    """`base` overridden by `child` (see the module docstring for the rules)."""
    capture_names = {s.key_name for s in child if isinstance(s, sx.CaptureStmt)}
    metric_modules = {(s.metric, s.module) for s in child if isinstance(s, sx.ImportanceStmt)}
    targets = {s.identity for s in child if isinstance(s, sx.InterveneStmt)}
    effect_names = {s.key_name for s in child if isinstance(s, sx.EffectStmt)}
    out = [s for s in base
           if not (isinstance(s, sx.CaptureStmt) and s.key_name in capture_names)
           and not (isinstance(s, sx.ImportanceStmt) and (s.metric, s.module) in metric_modules)
           and not (isinstance(s, sx.InterveneStmt) and s.identity in targets)
           and not (isinstance(s, sx.EffectStmt) and s.key_name in effect_names)]
    for st in child:
        if isinstance(st, sx.Assign | sx.BlockDecl):
            out = _replace_named(out, st)
        else:
            out.append(st)
    return tuple(out)


def _replace_named(statements: list, st: sx.Assign | sx.BlockDecl) -> list:
    for i, old in enumerate(statements):
        if isinstance(st, sx.Assign) and isinstance(old, sx.Assign) and old.key == st.key:
            return [*statements[:i], st, *statements[i + 1:]]
        if isinstance(st, sx.BlockDecl) and isinstance(old, sx.BlockDecl) and old.name == st.name:
            merged = attrs.evolve(st, assigns=tuple(_merge_assigns(old.assigns, st.assigns)))
            return [*statements[:i], merged, *statements[i + 1:]]
    return [*statements, st]


def _merge_assigns(base: Sequence[sx.Assign], child: Sequence[sx.Assign]) -> list[sx.Assign]:
    out = list(base)
    for a in child:
        out = _replace_named(out, a)
    return out


# --set ---------------------------------------------------------------------------------
def apply_overrides(decl: sx.ExperimentDecl, overrides: Sequence[str]
                    ) -> tuple[sx.ExperimentDecl, list[Diagnostic]]:
    """`decl` with every `key.path=value` applied; problems are spans in path `--set`."""
    diags: list[Diagnostic] = []
    for line, text in enumerate(overrides, start=1):
        try:
            decl = _apply_one(decl, text, line)
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
    return decl, diags


def _override_error(line: int, text: str, message: str, *, end: int | None = None,
                    help: Sequence[str] = ()) -> DiagnosticError:
    """An error about `--set {text}` (the `line`-th override), spanning its key (up to `end`)
    or all of it."""
    return fail(OVERRIDE_PATH, message, code="override", line=line,
                end_col=len(text) + 1 if end is None else end, help=(*help, f"in `--set {text}`"))


def _apply_one(decl: sx.ExperimentDecl, text: str, line: int) -> sx.ExperimentDecl:
    key_text, sep, value_text = text.partition("=")
    key_text = key_text.strip()
    if not sep or not key_text:
        raise _override_error(line, text, f"`--set {text}` is not KEY=VALUE",
                              help=("e.g. `--set data.limit=8`",))
    path = tuple(key_text.split("."))
    key_end = len(text.partition("=")[0]) + 1
    key_span = Span(path=OVERRIDE_PATH, line=line, col=1, end_line=line, end_col=key_end)
    _check_override_path(path, decl, line, text, key_end)
    value = _override_value(path, value_text, line, key_end + 1)
    assign = sx.Assign(key=path[-1], value=value, key_span=key_span,
                       span=Span(path=OVERRIDE_PATH, line=line, col=1, end_line=line,
                                 end_col=len(text) + 1))
    if len(path) == 1:
        return attrs.evolve(decl, statements=tuple(_replace_named(list(decl.statements), assign)))
    if len(path) == 2:
        block = sx.BlockDecl(name=path[0], assigns=(assign,), name_span=key_span,
                             span=assign.span, open_line=line)
        return attrs.evolve(decl, statements=tuple(_replace_named(list(decl.statements), block)))
    statements = []
    for st in decl.statements:
        if _targets(st, path):
            st = attrs.evolve(st, body=tuple(_replace_named(list(st.body or ()), assign)))
        statements.append(st)
    return attrs.evolve(decl, statements=tuple(statements))


# `--set KIND.NAME.KEY=VALUE`: the statements KIND.NAME addresses, by the name each is known by.
_NAMED = {
    "capture": (sx.CaptureStmt, lambda s: s.key_name),
    "importance": (sx.ImportanceStmt, lambda s: s.metric),
    "effect": (sx.EffectStmt, lambda s: s.key_name),
    "intervene": (sx.InterveneStmt, lambda s: s.target),
}


def _statement_path(path: tuple[str, ...]) -> tuple[str, str, str]:
    """(kind, name, key) of a statement path; an intervention target may hold dots."""
    return path[0], ".".join(path[1:-1]), path[-1]


def _targets(st: sx.Statement, path: tuple[str, ...]) -> bool:
    kind, name, _ = _statement_path(path)
    node, name_of = _NAMED[kind]
    return isinstance(st, node) and name_of(st) == name


def _check_override_path(path: tuple[str, ...], decl: sx.ExperimentDecl, line: int, text: str,
                         key_end: int) -> None:
    def unknown(message: str, choices: Sequence[str]) -> DiagnosticError:
        word = ".".join(path)
        return _override_error(line, text, message, end=key_end,
                               help=did_you_mean(word, choices) or (f"expected {one_of(choices)}",)
                               if choices else ())

    settable = [*vocab.TOP_KEYS, *(f"{b}.{k}" for b, keys in vocab.BLOCK_KEYS.items() for k in keys)]
    if path[0] in _NAMED:
        if len(path) < 3 or (len(path) > 3 and path[0] != "intervene"):
            raise unknown(f"write `--set {path[0]}.NAME.KEY=VALUE`", ())
        kind, name, _ = _statement_path(path)
        node, name_of = _NAMED[kind]
        names = sorted({name_of(s) for s in decl.statements if isinstance(s, node)})
        if name not in names:
            raise _override_error(line, text, f"no {kind} named `{name}` in experiment "
                                  f"`{decl.name}`", end=key_end,
                                  help=did_you_mean(name, names) or (
                                      (f"{kind}s: {', '.join(names)}",) if names else ()))
        return
    if ".".join(path) not in settable:
        raise unknown(f"unknown key `{'.'.join(path)}`", settable)


def _override_value(path: tuple[str, ...], text: str, line: int, col: int) -> sx.Value:
    """The value as the language reads it; a string where a path is expected or it is no value."""
    start = len(text) - len(text.lstrip())
    raw = text.strip()
    span = Span(path=OVERRIDE_PATH, line=line, col=col + start, end_line=line,
                end_col=col + start + max(1, len(raw)))
    try:
        value = parse_value("\n" * (line - 1) + " " * (col - 1) + text, OVERRIDE_PATH)
    except DiagnosticError:
        return sx.Str(value=raw, span=span)
    if path in _STRING_KEYS and not isinstance(value, sx.Str):
        return sx.Str(value=raw, span=span)
    return value
