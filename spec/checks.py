"""Merged syntax → `ir.Experiment`, checking every key, type and range on the way.

The checks that need no model: unknown keys, sites, metrics, aggregation modes and masks
(with "did you mean"), wrong value types and ranges, metrics at modules that cannot carry
them, `of heads[...]` without a hydra block or beyond its heads. Every problem is collected;
nothing stops at the first. Model-dependent checks live in `model_checks.py`.
"""

from __future__ import annotations

import re

from expc.spec import ir
from expc.spec import syntax as sx
from expc.spec import lower_interventions as lowering
from expc.spec import vocabulary as vocab
from expc.spec.checker import BAD as _BAD
from expc.spec.checker import Checker, aggregate as _aggregate, describe, fit_help, fits
from expc.spec.checker import heads as _heads
from expc.spec.diagnostics import Diagnostic
from expc.spec.model_shape import ALL_ROLES
from expc.spec.suggest import one_of

def lower(decl: sx.ExperimentDecl, path: str) -> tuple[ir.Experiment | None, tuple[Diagnostic, ...]]:
    """The IR of one merged experiment declaration, and every problem found on the way."""
    c = Checker()
    settings: dict[str, sx.Assign] = {}
    blocks: dict[str, sx.BlockDecl] = {}
    captures, importances, interventions, effects = [], [], [], []
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
        elif isinstance(st, sx.InterveneStmt):
            interventions.append(st)
        elif isinstance(st, sx.EffectStmt):
            effects.append(st)
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
    ir_interventions = [lowering.intervention(c, st, hydra) for st in interventions]
    ir_effects = [lowering.effect(c, st, hydra) for st in effects]
    good_effects = [e for e in ir_effects if isinstance(e, ir.Effect)]
    lowering.duplicate_effects(c, good_effects, hydra if isinstance(hydra, ir.Hydra) else None)

    if isinstance(data, ir.Data):
        masks = [cap.aggregate.mask for cap in ir_captures if isinstance(cap, ir.Capture)]
        masks += lowering.field_uses([i for i in ir_interventions if isinstance(i, ir.Intervention)],
                                     good_effects)
        _field_masks(c, data.source, masks)
        _token_fields(c, data.source, good_effects)

    parts = (model, dtype, device, seed, compile_, hydra, data, output, *ir_captures,
             *ir_importances, *ir_interventions, *ir_effects)
    if c.diagnostics or any(p is _BAD for p in parts):
        return None, tuple(c.diagnostics)
    return ir.Experiment(
        name=decl.name, path=path, model=model, dtype=dtype, device=device, seed=seed,
        compile=compile_, hydra=hydra, data=data, captures=tuple(ir_captures),
        importances=tuple(ir_importances), interventions=tuple(ir_interventions),
        effects=tuple(ir_effects), output=output, span=decl.span,
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
    missing = [key for key in ("trunk", "heads") if key not in keys]
    for key in missing:
        c.error(block.name_span, f"`hydra` needs `{key} = ...`", code="missing")
    if missing:
        return _BAD
    trunk_value = keys["trunk"].value
    if isinstance(trunk_value, sx.Ident) and trunk_value.name == vocab.AUTO_TRUNK:
        trunk = None
    elif isinstance(trunk_value, sx.Ident):
        trunk = c.error(trunk_value.span, f"`hydra.trunk` must be an integer or "
                        f"`{vocab.AUTO_TRUNK}`, found {describe(trunk_value)}", code="type",
                        help=(f"`trunk = {vocab.AUTO_TRUNK}` splits below the first "
                              "intervened layer",))
    else:
        trunk = c.integer(trunk_value, "hydra.trunk", minimum=0)
    heads = c.integer(keys["heads"].value, "hydra.heads", minimum=1)
    head_models = (_head_models(c, keys["head_models"].value, heads)
                   if "head_models" in keys else ())
    if _BAD in (trunk, heads, head_models):
        return _BAD
    return ir.Hydra(trunk=trunk, heads=heads, head_models=head_models, span=block.span,
                    trunk_span=trunk_value.span)


def _head_models(c: Checker, value: sx.Value, heads: object) -> object:
    """`head_models = ["ckpt/a", ...]`: one checkpoint folder per head."""
    if not isinstance(value, sx.ListValue):
        return c.error(value.span, f"`head_models` must be a list of checkpoint folders, found "
                       f"{describe(value)}", code="type", help=('e.g. `["ckpt/a", "ckpt/b"]`',))
    folders = tuple(c.string(item, "head_models") for item in value.items)
    if _BAD in folders:
        return _BAD
    if isinstance(heads, int) and len(folders) != heads:
        return c.error(value.span, f"`head_models` names {len(folders)} checkpoints for {heads} "
                       "heads", code="hydra-heads", help=("give one checkpoint folder per head",))
    return folders


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
    window = (c.integer(keys["window"].value, "window", minimum=1)
              if "window" in keys else vocab.DEFAULT_WINDOW)
    if _BAD in (source, batch_size, max_length, limit, window):
        return _BAD
    return ir.Data(source=source, batch_size=batch_size, max_length=max_length, limit=limit,
                   window=window, span=block.span,
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
    given = c.kwargs(value, allowed, positional="path")
    if given is _BAD:
        return _BAD
    if "path" not in given:
        return c.error(value.span, f"`{value.name}(...)` needs a path", code="missing",
                       help=(f'e.g. `{value.name}("prompts.{value.name}")`',))
    path = c.string(given["path"], "path")
    field = c.string(given["field"], "field") if "field" in given else default_field
    mask_field = c.string(given["mask_field"], "mask_field") if "mask_field" in given else None
    split = c.string(given["split"], "split") if "split" in given else None
    if _BAD in (path, field, mask_field, split):
        return _BAD
    return ir.Source(kind=value.name, path=path, field=field, mask_field=mask_field,
                     split=split, span=value.span)


def _field_masks(c: Checker, source: ir.Source, masks: list) -> None:
    """A `field("x")` mask (or `positions = field("x")`) reads the per-token list the data
    source names as its `mask_field`; any other name would silently read that one's values."""
    for mask in masks:
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


def _token_fields(c: Checker, source: ir.Source, effects: list[ir.Effect]) -> None:
    """`logit_diff` reads each sample's `correct` and `wrong` tokens from its record's
    fields, and only sources with a `field` (not `text`) have records."""
    if "field" in vocab.SOURCES[source.kind][0]:
        return
    for e in effects:
        if e.correct is not None:
            c.error(e.span, f"`{e.metric}` reads the fields `{e.correct}` and `{e.wrong}` of each "
                    f"record, and a `{source.kind}` source has no fields", code="data-field",
                    help=("use a `jsonl(...)` or `parquet(...)` source",))


def _output(c: Checker, block: sx.BlockDecl | None, decl: sx.ExperimentDecl) -> object:
    keys = c.assigns(block.assigns, vocab.BLOCK_KEYS["output"], "`output` key") if block else {}
    dir_ = c.string(keys["dir"].value, "dir") if "dir" in keys else f"runs/{decl.name}"
    every = (c.integer(keys["checkpoint_every"].value, "checkpoint_every", minimum=0)
             if "checkpoint_every" in keys else 0)
    shard_size = (_size(c, keys["shard_size"].value, "shard_size") if "shard_size" in keys
                  else vocab.DEFAULT_SHARD_SIZE)
    if _BAD in (dir_, every, shard_size):
        return _BAD
    return ir.Output(dir=dir_, checkpoint_every=every, shard_size=shard_size,
                     span=block.span if block else decl.span)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def _size(c: Checker, value: sx.Value, key: str) -> object:
    """A size string, `"2GB"`, `"500 MB"`, `"4096B"` (decimal units) -> bytes (at least 1)."""
    text = c.string(value, key)
    if text is _BAD:
        return _BAD
    match = _SIZE.match(text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in vocab.SIZE_UNITS:
        return c.error(value.span, f"`{key}` must be a size such as \"2GB\", found {text!r}",
                       code="range", help=("units: " + ", ".join(vocab.SIZE_UNITS)
                                           + " (decimal: 1 GB = 10^9 bytes)",))
    size = int(float(match.group(1)) * vocab.SIZE_UNITS[unit])
    if size < 1:
        return c.error(value.span, f"`{key}` must be at least 1 byte, found {text!r}",
                       code="range")
    return size


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


def _importance(c: Checker, st: sx.ImportanceStmt, hydra: object) -> object:
    ok = True
    spec = vocab.METRICS.get(st.metric)
    if spec is None:
        c.unknown(st.metric_span, "importance metric", st.metric, vocab.METRICS)
        ok = False
    if st.module not in (*ALL_ROLES, vocab.LAYER_TARGET):
        c.unknown(st.module_span, "module", st.module, (*ALL_ROLES, vocab.LAYER_TARGET))
        ok = False
    elif spec is not None and not fits(spec.modules, st.module):
        c.error(st.module_span, f"`{st.metric}` cannot be computed at `{st.module}`",
                code="metric-module", help=(fit_help(spec.modules),))
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
