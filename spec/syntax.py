"""The parsed `.exp` file as written, before includes, `extends` and checks are applied.

This is the layer the formatter prints and the resolver merges: blocks, statements and
literal values with their spans. Spans (and layout-only facts such as where a `{` sat) do
not take part in equality, so `parse(fmt(text)) == parse(text)` is a plain `==`.
"""

from __future__ import annotations

from typing import Any, Union

import attrs

from expc.spec.diagnostics import Span
from expc.spec.ir import NO_SPAN, IndexSelector


def _layout(default: Any = NO_SPAN) -> Any:
    return attrs.field(default=default, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class Str:
    value: str
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class Num:
    value: int | float
    text: str = attrs.field(default="", eq=False)  # as written, so the formatter keeps `1e3` or `0.50`
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class Ident:
    """A bare word such as `float32`, `attention`, `true`, `none` or `cuda:1`."""

    name: str
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class KwArg:
    key: str
    value: "Value"
    key_span: Span = _layout()
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class Call:
    """`name(arg, key = value)`: a constructor like `jsonl(...)` or `mean(mask = last)`."""

    name: str
    args: tuple["Value", ...] = ()
    kwargs: tuple[KwArg, ...] = ()
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class ListValue:
    items: tuple["Value", ...] = ()
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class Indexed:
    """`name[layers]`: a site at a layer, as effects name theirs (`at = resid_out[3]`)."""

    name: str
    layers: IndexSelector
    span: Span = _layout()


Value = Union[Str, Num, Ident, Call, ListValue, Indexed]


@attrs.frozen(kw_only=True)
class Assign:
    key: str
    value: Value
    key_span: Span = _layout()
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class BlockDecl:
    """`name { key = value ... }`: hydra, data, output."""

    name: str
    assigns: tuple[Assign, ...] = ()
    name_span: Span = _layout()
    span: Span = _layout()
    open_line: int = _layout(0)  # line of `{`, for the formatter


@attrs.frozen(kw_only=True)
class CaptureStmt:
    site: str
    layers: IndexSelector | None = None
    heads: IndexSelector | None = None
    name: str | None = None
    body: tuple[Assign, ...] | None = None
    site_span: Span = _layout()
    name_span: Span | None = _layout(None)
    span: Span = _layout()

    @property
    def key_name(self) -> str:
        return self.name or self.site


@attrs.frozen(kw_only=True)
class ImportanceStmt:
    metric: str
    module: str
    layers: IndexSelector | None = None
    heads: IndexSelector | None = None
    body: tuple[Assign, ...] | None = None
    metric_span: Span = _layout()
    module_span: Span = _layout()
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class InterveneStmt:
    """`intervene TARGET[layers] [of heads[...]] { set = ..., channels = ..., ... }`."""

    target: str
    layers: IndexSelector | None = None
    heads: IndexSelector | None = None
    body: tuple[Assign, ...] | None = None
    target_span: Span = _layout()
    span: Span = _layout()

    @property
    def identity(self) -> tuple:
        """What `extends` overrides by: the target, its layers and heads as written."""
        return self.target, self.layers, self.heads


@attrs.frozen(kw_only=True)
class EffectStmt:
    """`effect METRIC [of heads[...]] [vs heads[R]] [as NAME] [{ params }]`."""

    metric: str
    heads: IndexSelector | None = None
    reference: IndexSelector | None = None
    name: str | None = None
    body: tuple[Assign, ...] | None = None
    metric_span: Span = _layout()
    name_span: Span | None = _layout(None)
    span: Span = _layout()

    @property
    def key_name(self) -> str:
        return self.name or self.metric


Statement = Union[Assign, BlockDecl, CaptureStmt, ImportanceStmt, InterveneStmt, EffectStmt]


@attrs.frozen(kw_only=True)
class ExperimentDecl:
    name: str
    extends: str | None = None
    statements: tuple[Statement, ...] = ()
    name_span: Span = _layout()
    extends_span: Span | None = _layout(None)
    span: Span = _layout()
    open_line: int = _layout(0)


@attrs.frozen(kw_only=True)
class IncludeDecl:
    path: str
    span: Span = _layout()


@attrs.frozen(kw_only=True)
class Comment:
    line: int
    col: int
    text: str
    trailing: bool  # code precedes it on its line


@attrs.frozen(kw_only=True)
class Document:
    path: str = attrs.field(eq=False)
    items: tuple[IncludeDecl | ExperimentDecl, ...] = ()
    comments: tuple[Comment, ...] = attrs.field(default=(), eq=False)
    text: str = attrs.field(default="", eq=False, repr=False)

    @property
    def experiments(self) -> tuple[ExperimentDecl, ...]:
        return tuple(i for i in self.items if isinstance(i, ExperimentDecl))

    @property
    def includes(self) -> tuple[IncludeDecl, ...]:
        return tuple(i for i in self.items if isinstance(i, IncludeDecl))
