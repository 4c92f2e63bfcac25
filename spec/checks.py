"""Merged syntax → `ir.Experiment`, checking every key, type and range on the way.

The checks that need no model: unknown keys, sites, metrics, aggregation modes and masks
(with "did you mean"), wrong value types and ranges, metrics at modules that cannot carry
them, `of heads[...]` without a hydra block or beyond its heads. Every problem is collected;
nothing stops at the first. Model-dependent checks live in `model_checks.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from expc.spec import ir
from expc.spec import syntax as sx
from expc.spec import vocabulary as vocab
from expc.spec.diagnostics import Diagnostic, Span, error
from expc.spec.model_shape import ALL_NORM_ROLES, ALL_ROLES, ATTENTION_OUTPUT
from expc.spec.suggest import did_you_mean, one_of

_BAD = object()  # a value that failed its check (already reported)


class Checker:
    """Collects diagnostics while reading values against the vocabulary."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []

    def error(self, span: Span, message: str, *, code: str, help: Iterable[str] = ()) -> object:
        self.diagnostics.append(error(span, message, code=code, help=help))
        return _BAD

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
    return "a list"


def lower(decl: sx.ExperimentDecl, path: str) -> tuple[ir.Experiment | None, tuple[Diagnostic, ...]]:
    """The IR of one merged experiment declaration, and every problem found on the way."""
    c = Checker()
    settings: dict[str, sx.Assign] = {}
    blocks: dict[str, sx.BlockDecl] = {}
    captures, importances = [], []
    for st in decl.statements:
        if isinstance(st, sx.Assign):
            if st.key in vocab.BLOCKS:
                c.error(st.key_span, f"`{st.key}` is a block", code="type",
                        help=(f"write `{st.key} {{ ... }}`",))
            elif st.key in vocab.TOP_KEYS:
                settings[st.key] = st
            else:
                c.unknown(st.key_span, "key", st.key, vocab.TOP_KEYS + vocab.BLOCKS)
        elif isinstance(st, sx.BlockDecl):
            if st.name in vocab.TOP_KEYS:
                c.error(st.name_span, f"`{st.name}` is a setting, not a block", code="type",
                        help=(f"write `{st.name} = ...`",))
            elif st.name in vocab.BLOCKS:
                blocks[st.name] = st
            else:
                c.unknown(st.name_span, "block", st.name, vocab.BLOCKS + vocab.TOP_KEYS)
        elif isinstance(st, sx.CaptureStmt):
            captures.append(st)
        else:
            importances.append(st)

    model = _model(c, settings.get("model"), decl)
    dtype = c.word(settings["dtype"].value, "dtype", vocab.DTYPES) if "dtype" in settings else "float32"
    device = _device(c, settings["device"].value) if "device" in settings else "auto"
    seed = (c.integer(settings["seed"].value, "seed", minimum=0, maximum=vocab.SEED_MAX)
            if "seed" in settings else 0)
    compile_ = c.boolean(settings["compile"].value, "compile") if "compile" in settings else False
    hydra = _hydra(c, blocks["hydra"]) if "hydra" in blocks else None
    data = _data(c, blocks.get("data"), decl)
    output = _output(c, blocks.get("output"), decl)
    ir_captures = [_capture(c, st, hydra) for st in captures]
    ir_importances = [_importance(c, st, hydra) for st in importances]

    if isinstance(data, ir.Data):
        _field_masks(c, data.source, ir_captures)

    parts = (model, dtype, device, seed, compile_, hydra, data, output, *ir_captures,
             *ir_importances)
    if c.diagnostics or any(p is _BAD for p in parts):
        return None, tuple(c.diagnostics)
    return ir.Experiment(
        name=decl.name, path=path, model=model, dtype=dtype, device=device, seed=seed,
        compile=compile_, hydra=hydra, data=data, captures=tuple(ir_captures),
        importances=tuple(ir_importances), output=output, span=decl.span,
        device_span=settings["device"].value.span if "device" in settings else decl.name_span), ()


def _model(c: Checker, assign: sx.Assign | None, decl: sx.ExperimentDecl) -> object:
    if assign is None:
        return c.error(decl.name_span, f"experiment `{decl.name}` sets no `model`", code="missing",
                       help=(f'add `model = "{vocab.BUILTIN_PREFIX}tiny-llama"` or a checkpoint '
                             'folder',))
    path = c.string(assign.value, "model")
    return _BAD if path is _BAD else ir.ModelRef(path=path, span=assign.value.span)


def _device(c: Checker, value: sx.Value) -> object:
    if isinstance(value, sx.Ident) and re.fullmatch(r"cuda:\d+", value.name):
        return value.name
    return c.word(value, "device", vocab.DEVICES)


def _hydra(c: Checker, block: sx.BlockDecl) -> object:
    keys = c.assigns(block.assigns, vocab.BLOCK_KEYS["hydra"], "`hydra` key")
    values = {}
    for key in ("trunk", "heads"):
        if key not in keys:
            values[key] = c.error(block.name_span, f"`hydra` needs `{key} = ...`", code="missing")
        else:
            values[key] = c.integer(keys[key].value, f"hydra.{key}", minimum=1)
    if _BAD in values.values():
        return _BAD
    return ir.Hydra(trunk=values["trunk"], heads=values["heads"], span=block.span,
                    trunk_span=keys["trunk"].value.span)


def _data(c: Checker, block: sx.BlockDecl | None, decl: sx.ExperimentDecl) -> object:
    if block is None:
        return c.error(decl.name_span, f"experiment `{decl.name}` has no `data {{ ... }}` block",
                       code="missing", help=('add `data { source = jsonl("prompts.jsonl") }`',))
    keys = c.assigns(block.assigns, vocab.BLOCK_KEYS["data"], "`data` key")
    if "source" not in keys:
        source = c.error(block.name_span, "`data` needs `source = ...`", code="missing",
                         help=('e.g. `source = jsonl("prompts.jsonl", field = "text")`',))
    else:
        source = _source(c, keys["source"].value)
    batch_size = (c.integer(keys["batch_size"].value, "batch_size", minimum=1)
                  if "batch_size" in keys else vocab.DEFAULT_BATCH_SIZE)
    max_length = (c.integer(keys["max_length"].value, "max_length", minimum=1, allow_none=True)
                  if "max_length" in keys else None)
    limit = c.integer(keys["limit"].value, "limit", minimum=1, allow_none=True) if "limit" in keys else None
    if _BAD in (source, batch_size, max_length, limit):
        return _BAD
    return ir.Data(source=source, batch_size=batch_size, max_length=max_length, limit=limit,
                   span=block.span,
                   max_length_span=keys["max_length"].value.span if "max_length" in keys else block.span)


def _source(c: Checker, value: sx.Value) -> object:
    kinds = tuple(vocab.SOURCES)
    if not isinstance(value, sx.Call):
        return c.error(value.span, f"`source` must be {one_of(k + '(...)' for k in kinds)}, found "
                       f"{describe(value)}", code="type",
                       help=('e.g. `jsonl("prompts.jsonl", field = "text")`',))
    if value.name not in vocab.SOURCES:
        return c.unknown(value.span, "data source", value.name, kinds)
    allowed, default_field = vocab.SOURCES[value.name]
    given: dict[str, sx.Value] = {}
    if len(value.args) > 1:
        c.error(value.args[1].span, f"`{value.name}(...)` takes one positional argument, the path",
                code="type", help=(f"name the others: {one_of(a + ' = ...' for a in allowed[1:])}",)
                if len(allowed) > 1 else ())
    if value.args:
        given["path"] = value.args[0]
    for kw in value.kwargs:
        if kw.key not in allowed:
            c.unknown(kw.key_span, f"`{value.name}` argument", kw.key, allowed)
        elif kw.key in given:
            c.error(kw.key_span, f"`{kw.key}` given twice", code="duplicate")
        else:
            given[kw.key] = kw.value
    if "path" not in given:
        return c.error(value.span, f"`{value.name}(...)` needs a path", code="missing",
                       help=(f'e.g. `{value.name}("prompts.{value.name}")`',))
    path = c.string(given["path"], "path")
    field = c.string(given["field"], "field") if "field" in given else default_field
    mask_field = c.string(given["mask_field"], "mask_field") if "mask_field" in given else None
    if _BAD in (path, field, mask_field):
        return _BAD
    return ir.Source(kind=value.name, path=path, field=field, mask_field=mask_field,
                     span=value.span)


def _field_masks(c: Checker, source: ir.Source, captures: list) -> None:
    """A `field("x")` mask reads the per-token list the data source names as its
    `mask_field`; any other name would silently read that one's values."""
    for cap in captures:
        mask = cap.aggregate.mask if isinstance(cap, ir.Capture) else None
        if mask is None or mask.kind != "field" or mask.field == source.mask_field:
            continue
        if source.mask_field is None:
            fix = (f'add `mask_field = "{mask.field}"` to `{source.kind}(...)`'
                   if "mask_field" in vocab.SOURCES[source.kind][0]
                   else f"a `{source.kind}` source has no fields; use `jsonl` or `tokens`")
            c.error(mask.span, f'`field("{mask.field}")` needs a data source with the mask field '
                    f'`{mask.field}`, and `{source.kind}(...)` gives none', code="mask-field",
                    help=(fix,))
        else:
            c.error(mask.span, f'`field("{mask.field}")` names no mask field of the data: its '
                    f'source gives `mask_field = "{source.mask_field}"`', code="mask-field",
                    help=(f'write `field("{source.mask_field}")`, or read `mask_field = '
                          f'"{mask.field}"` from the source',))


def _output(c: Checker, block: sx.BlockDecl | None, decl: sx.ExperimentDecl) -> object:
    keys = c.assigns(block.assigns, vocab.BLOCK_KEYS["output"], "`output` key") if block else {}
    dir_ = c.string(keys["dir"].value, "dir") if "dir" in keys else f"runs/{decl.name}"
    every = (c.integer(keys["checkpoint_every"].value, "checkpoint_every", minimum=0)
             if "checkpoint_every" in keys else 0)
    if _BAD in (dir_, every):
        return _BAD
    return ir.Output(dir=dir_, checkpoint_every=every, span=block.span if block else decl.span)


def _heads(c: Checker, selector: ir.IndexSelector | None, hydra: object, what: str) -> object:
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


def _capture(c: Checker, st: sx.CaptureStmt, hydra: object) -> object:
    ok = True
    if st.site not in vocab.SITES:
        c.unknown(st.site_span, "capture site", st.site, vocab.SITES)
        ok = False
    elif st.site in vocab.LAYER_SITES and st.layers is None:
        c.error(st.site_span, f"`{st.site}` is a per-layer site: say which layers",
                code="selector", help=(f"e.g. `{st.site}[*]` or `{st.site}[-1]`",))
        ok = False
    elif st.site in vocab.MODEL_SITES and st.layers is not None:
        c.error(st.layers.span, f"`{st.site}` is model-wide and takes no layers",
                code="selector", help=(f"write `capture {st.site}`",))
        ok = False
    if st.site == "embed" and st.heads is not None:
        c.error(st.heads.span, "`embed` sits before the Hydra split; `of heads` does not apply",
                code="heads")
        ok = False
    heads = _heads(c, st.heads, hydra, f"`{st.site}`")
    keys = c.assigns(st.body or (), vocab.CAPTURE_KEYS, "capture key")
    if "aggregate" in keys:
        aggregate = _aggregate(c, keys["aggregate"].value)
    else:
        aggregate = ir.Aggregate(mode="mean", mask=ir.Mask(kind=vocab.DEFAULT_MASK, span=st.span),
                                 span=st.span)
    if not ok or _BAD in (heads, aggregate):
        return _BAD
    return ir.Capture(site=st.site, layers=st.layers, heads=heads, name=st.name,
                      aggregate=aggregate, span=st.span)


def _aggregate(c: Checker, value: sx.Value) -> object:
    modes = vocab.AGGREGATE_MODES
    if isinstance(value, sx.Ident):
        if value.name not in modes:
            return c.unknown(value.span, "aggregation mode", value.name, modes)
        mask = (ir.Mask(kind=vocab.DEFAULT_MASK, span=value.span)
                if value.name in vocab.REDUCING_MODES else None)
        return ir.Aggregate(mode=value.name, mask=mask, span=value.span)
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
    mask = ir.Mask(kind=vocab.DEFAULT_MASK, span=value.span)
    for kw in value.kwargs:
        if kw.key != "mask":
            c.unknown(kw.key_span, f"`{value.name}` argument", kw.key, ("mask",))
            mask = _BAD
        else:
            mask = _mask(c, kw.value)
    if mask is _BAD:
        return _BAD
    return ir.Aggregate(mode=value.name, mask=mask, span=value.span)


def _mask(c: Checker, value: sx.Value) -> object:
    if isinstance(value, sx.Ident):
        if value.name == "field":
            return c.error(value.span, "a field mask names its data field", code="type",
                           help=('write `field("name")`',))
        if value.name not in vocab.MASKS:
            return c.unknown(value.span, "mask", value.name, vocab.MASKS)
        return ir.Mask(kind=value.name, span=value.span)
    if isinstance(value, sx.Call) and value.name == "field":
        if len(value.args) != 1 or value.kwargs:
            return c.error(value.span, "`field(...)` takes one argument, the data field's name",
                           code="type", help=('write `field("name")`',))
        name = c.string(value.args[0], "field")
        return _BAD if name is _BAD else ir.Mask(kind="field", field=name, span=value.span)
    if isinstance(value, sx.Call) and value.name not in vocab.MASKS:
        return c.unknown(value.span, "mask", value.name, vocab.MASKS)
    return c.error(value.span, f"`mask` must be {one_of(vocab.MASKS[:-1])} or `field(\"name\")`,"
                   f" found {describe(value)}", code="type")


def _importance(c: Checker, st: sx.ImportanceStmt, hydra: object) -> object:
    ok = True
    spec = vocab.METRICS.get(st.metric)
    if spec is None:
        c.unknown(st.metric_span, "importance metric", st.metric, vocab.METRICS)
        ok = False
    if st.module not in ALL_ROLES:
        c.unknown(st.module_span, "module", st.module, ALL_ROLES)
        ok = False
    elif spec is not None and not _fits(spec.modules, st.module):
        c.error(st.module_span, f"`{st.metric}` cannot be computed at `{st.module}`",
                code="metric-module", help=(_fit_help(spec.modules),))
        ok = False
    if st.layers is None:
        c.error(st.module_span, "say which layers the module is taken from", code="selector",
                help=(f"e.g. `{st.module}[*]`",))
        ok = False
    heads = _heads(c, st.heads, hydra, f"`{st.metric}`")
    params = _params(c, spec, st.body or ()) if spec is not None else _BAD
    if not ok or _BAD in (heads, params):
        return _BAD
    return ir.Importance(metric=st.metric, module=st.module, layers=st.layers, heads=heads,
                         params=params, span=st.span, module_span=st.module_span)


def _fits(kind: str, module: str) -> bool:
    if kind == "any":
        return True
    if kind == "attention_output":
        return module == ATTENTION_OUTPUT
    is_norm = module in ALL_NORM_ROLES
    return is_norm if kind == "norm" else not is_norm


def _fit_help(kind: str) -> str:
    return {
        "attention_output": f"it needs the attention output projection: `at {ATTENTION_OUTPUT}[...]`",
        "norm": "it needs a norm module, e.g. `post_attention_layernorm`",
        "linear": "it needs a linear module, e.g. `mlp.down_proj`",
    }[kind]


def _params(c: Checker, spec: vocab.MetricSpec, body: tuple[sx.Assign, ...]) -> object:
    names = tuple(p.name for p in spec.params)
    if body and not names:
        c.error(body[0].key_span, f"`{spec.name}` takes no parameters", code="unknown")
        return _BAD
    given = c.assigns(body, names, f"`{spec.name}` parameter")
    params = []
    for p in spec.params:
        if p.name not in given:
            params.append(ir.Param(name=p.name, value=p.default))
            continue
        assign = given[p.name]
        value = (c.word(assign.value, p.name, p.choices) if p.choices
                 else c.integer(assign.value, p.name, minimum=p.minimum))
        if value is _BAD:
            return _BAD
        params.append(ir.Param(name=p.name, value=value, span=assign.span))
    if len(given) != len(body):
        return _BAD
    return tuple(params)
