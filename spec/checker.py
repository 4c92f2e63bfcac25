"""The checker's reading of values: typed readers that collect diagnostics, and the value
kinds several statements share (masks, aggregations, `of heads[...]` selectors).

Every reader returns the value or `BAD` (its problem already recorded), so a lowering can
read every part of a statement and report all of them at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from expc.spec import ir
from expc.spec import syntax as sx
from expc.spec import vocabulary as vocab
from expc.spec.diagnostics import Diagnostic, Span, error
from expc.spec.model_shape import ALL_NORM_ROLES, ATTENTION_OUTPUT
from expc.spec.suggest import did_you_mean, one_of

BAD = object()  # a value that failed its check (already reported)


class Checker:
    """Collects diagnostics while reading values against the vocabulary."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []

    def error(self, span: Span, message: str, *, code: str, help: Iterable[str] = ()) -> object:
        self.diagnostics.append(error(span, message, code=code, help=help))
        return BAD

    def unknown(self, span: Span, what: str, word: str, choices: Iterable[str]) -> object:
        choices = tuple(choices)
        return self.error(span, f"unknown {what} `{word}`", code="unknown",
                          help=did_you_mean(word, choices) or (f"expected {one_of(choices)}",))

    # typed readers ------------------------------------------------------------------
    def integer(self, value: sx.Value, key: str, *, minimum: int, maximum: int = vocab.INT_MAX,
                allow_none: bool = False) -> object:
        if allow_none and isinstance(value, sx.Ident) and value.name == "none":
            return None
        if not isinstance(value, sx.Num) or not isinstance(value.value, int):
            return self.error(value.span, f"`{key}` must be an integer, found {describe(value)}",
                              code="type", help=("or `none`",) if allow_none else ())
        if not minimum <= value.value <= maximum:
            bound = f">= {minimum}" if value.value < minimum else f"<= {maximum}"
            return self.error(value.span, f"`{key}` must be {bound}, found {value.text}",
                              code="range")
        return value.value

    def string(self, value: sx.Value, key: str) -> object:
        if not isinstance(value, sx.Str):
            help_ = (f'quote it: `"{value.name}"`',) if isinstance(value, sx.Ident) else ()
            return self.error(value.span, f"`{key}` must be a string, found {describe(value)}",
                              code="type", help=help_)
        if not value.value:
            return self.error(value.span, f"`{key}` must not be empty", code="range")
        return value.value

    def number(self, value: sx.Value, key: str) -> object:
        """An integer or decimal number, as a float."""
        if not isinstance(value, sx.Num):
            return self.error(value.span, f"`{key}` must be a number, found {describe(value)}",
                              code="type")
        return float(value.value)

    def kwargs(self, call: sx.Call, allowed: Iterable[str], *, required: Iterable[str] = (),
               positional: str | None = None) -> object:
        """Name -> value of a call's arguments (`mean(run = "DIR")`): named ones, plus the one
        positional argument `positional` names (a source's path). Extra positional
        arguments, unknown or repeated names and missing required ones are reported."""
        allowed = tuple(allowed)
        before = len(self.diagnostics)
        given: dict[str, sx.Value] = {}
        if positional is not None and call.args:
            given[positional] = call.args[0]
        extra = call.args[1:] if positional is not None else call.args
        if extra:
            named = [a for a in allowed if a != positional]
            what = f"one positional argument, the {positional}" if positional else "named arguments"
            self.error(extra[0].span, f"`{call.name}(...)` takes {what}", code="type",
                       help=(f"name {'the others' if positional else 'them'}: "
                             f"{one_of(a + ' = ...' for a in named)}",)
                       if named else ())
        for kw in call.kwargs:
            if kw.key not in allowed:
                self.unknown(kw.key_span, f"`{call.name}` argument", kw.key, allowed)
            elif kw.key in given:
                self.error(kw.key_span, f"`{kw.key}` given twice", code="duplicate")
            else:
                given[kw.key] = kw.value
        for name in required:
            if name not in given:
                self.error(call.span, f"`{call.name}(...)` needs `{name} = ...`", code="missing")
        return given if len(self.diagnostics) == before else BAD

    def word(self, value: sx.Value, key: str, choices: Iterable[str]) -> object:
        choices = tuple(choices)
        if not isinstance(value, sx.Ident):
            help_ = (f"write it without quotes: `{value.value}`",) if isinstance(value, sx.Str) else ()
            return self.error(value.span, f"`{key}` must be one of {one_of(choices)}, found "
                              f"{describe(value)}", code="type", help=help_)
        if value.name not in choices:
            return self.unknown(value.span, key, value.name, choices)
        return value.name

    def boolean(self, value: sx.Value, key: str) -> object:
        if isinstance(value, sx.Ident) and value.name in ("true", "false", "True", "False"):
            return value.name in ("true", "True")
        return self.error(value.span, f"`{key}` must be `true` or `false`, found {describe(value)}",
                          code="type")

    def assigns(self, assigns: Iterable[sx.Assign], allowed: Iterable[str], what: str) -> dict:
        """Key → Assign for the allowed keys; unknown keys reported as "unknown {what}"."""
        allowed = tuple(allowed)
        out = {}
        for a in assigns:
            if a.key in allowed:
                out[a.key] = a
            else:
                self.unknown(a.key_span, what, a.key, allowed)
        return out


def describe(value: sx.Value) -> str:
    if isinstance(value, sx.Str):
        return f'string "{value.value[:40]}"'
    if isinstance(value, sx.Num):
        return f"number {value.text[:40]}"
    if isinstance(value, sx.Ident):
        return f"`{value.name}`"
    if isinstance(value, sx.Call):
        return f"`{value.name}(...)`"
    if isinstance(value, sx.Indexed):
        return f"`{value.name}[...]`"
    return "a list"


def field_call(c: Checker, value: sx.Call) -> object:
    """The data field's name of `field("name")` (masks, positions, logit_diff's tokens)."""
    if len(value.args) != 1 or value.kwargs:
        return c.error(value.span, "`field(...)` takes one argument, the data field's name",
                       code="type", help=('write `field("name")`',))
    return c.string(value.args[0], "field")


def fits(kind: str, module: str) -> bool:
    """Whether a metric that scores `kind` modules ("linear", "norm", "any",
    "attention_output", "layer") can be computed at module role `module` (or at `layers`,
    the whole layers, which only a "layer" metric scores)."""
    if kind == "layer" or module == vocab.LAYER_TARGET:
        return kind == "layer" and module == vocab.LAYER_TARGET
    if kind == "any":
        return True
    if kind == "attention_output":
        return module == ATTENTION_OUTPUT
    is_norm = module in ALL_NORM_ROLES
    return is_norm if kind == "norm" else not is_norm


def fit_help(kind: str) -> str:
    return {
        "attention_output": f"it needs the attention output projection: `at {ATTENTION_OUTPUT}[...]`",
        "norm": "it needs a norm module, e.g. `post_attention_layernorm`",
        "linear": "it needs a linear module, e.g. `mlp.down_proj`",
        "any": "it needs a linear or norm module, e.g. `mlp.down_proj`",
        "layer": f"it scores whole layers, not a module: `at {vocab.LAYER_TARGET}[...]`",
    }[kind]


def heads(c: Checker, selector: ir.IndexSelector | None, hydra: object, what: str) -> object:
    """Check an `of heads[...]` selector against the hydra block."""
    if selector is None:
        return None
    if hydra is None:
        return c.error(selector.span, f"`of heads[...]` on {what} needs a `hydra {{ ... }}` block",
                       code="heads", help=("add `hydra { trunk = ..., heads = ... }` or drop `of heads`",))
    if isinstance(hydra, ir.Hydra):
        bad = selector.out_of_range(hydra.heads)
        if bad:
            return c.error(selector.span_of(bad[0]), f"head {bad[0]} is out of range: hydra has {hydra.heads} "
                           f"heads (0..{hydra.heads - 1})", code="range")
    return selector


def aggregate(c: Checker, value: sx.Value) -> object:
    modes = vocab.AGGREGATE_MODES
    if isinstance(value, sx.Ident):
        if value.name not in modes:
            return c.unknown(value.span, "aggregation mode", value.name, modes)
        default = (ir.Mask(kind=vocab.DEFAULT_MASK, span=value.span)
                   if value.name in vocab.REDUCING_MODES else None)
        return ir.Aggregate(mode=value.name, mask=default, span=value.span)
    if not isinstance(value, sx.Call):
        return c.error(value.span, f"`aggregate` must be an aggregation mode, found {describe(value)}",
                       code="type", help=(f"expected {one_of(modes)}",))
    if value.name not in modes:
        return c.unknown(value.span, "aggregation mode", value.name, modes)
    if value.name not in vocab.REDUCING_MODES:
        if value.args or value.kwargs:
            return c.error(value.span, f"`{value.name}` takes no arguments", code="type",
                           help=(f"write `aggregate = {value.name}`",))
        return ir.Aggregate(mode=value.name, span=value.span)
    if value.args:
        return c.error(value.args[0].span, "the mask is a named argument", code="type",
                       help=(f"write `{value.name}(mask = ...)`",))
    chosen = ir.Mask(kind=vocab.DEFAULT_MASK, span=value.span)
    for kw in value.kwargs:
        if kw.key != "mask":
            c.unknown(kw.key_span, f"`{value.name}` argument", kw.key, ("mask",))
            chosen = BAD
        else:
            chosen = mask(c, kw.value)
    if chosen is BAD:
        return BAD
    return ir.Aggregate(mode=value.name, mask=chosen, span=value.span)


def mask(c: Checker, value: sx.Value) -> object:
    if isinstance(value, sx.Ident):
        if value.name == "field":
            return c.error(value.span, "a field mask names its data field", code="type",
                           help=('write `field("name")`',))
        if value.name not in vocab.MASKS:
            return c.unknown(value.span, "mask", value.name, vocab.MASKS)
        return ir.Mask(kind=value.name, span=value.span)
    if isinstance(value, sx.Call) and value.name == "field":
        name = field_call(c, value)
        return BAD if name is BAD else ir.Mask(kind="field", field=name, span=value.span)
    if isinstance(value, sx.Call) and value.name not in vocab.MASKS:
        return c.unknown(value.span, "mask", value.name, vocab.MASKS)
    return c.error(value.span, f"`mask` must be {one_of(vocab.MASKS[:-1])} or `field(\"name\")`,"
                   f" found {describe(value)}", code="type")
