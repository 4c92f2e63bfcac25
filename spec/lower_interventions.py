"""`intervene` and `effect` statements -> `ir.Intervention` and `ir.Effect` (contracts §4, §5).

The checks that need no model: the target (a per-layer site but `attn_pattern`, or a module
role; its `target_kind` follows), exactly one operation (`scale` alone or with `add`),
`mean`/`patch` only on sites, `lowest`/`highest` only on modules a metric scores, fractions
in (0, 1) and counts >= 1, `of heads[...]` required with a split and refused without one,
`vs` only with a split and never inside `of heads`, `cosine` with `at = SITE[L]`,
`logit_diff` with both fields, and two effects that would write the same keys. Checks
against the model (trunk layers, LM heads, widths, run folders) live in
`intervention_model_checks.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

from expc.spec import ir
from expc.spec import syntax as sx
from expc.spec import vocabulary as vocab
from expc.spec.checker import BAD, Checker, aggregate, describe, field_call, fit_help, fits
from expc.spec.checker import heads as checked_heads
from expc.spec.checker import mask as checked_mask
from expc.spec.model_shape import ALL_NORM_ROLES, ALL_ROLES
from expc.spec.suggest import one_of

OPERATIONS_HELP = ('`set = zero`, `set = mean(run = "DIR")`, `set = patch(run = "DIR")`, '
                   '`add = vector(run = "DIR", key = "KEY")` or `scale = S`')


# interventions ------------------------------------------------------------------------
def intervention(c: Checker, st: sx.InterveneStmt, hydra: object) -> object:
    kind = _target_kind(c, st)
    ok = kind is not BAD
    if st.layers is None and ok:
        c.error(st.target_span, "say which layers the intervention changes", code="selector",
                help=(f"e.g. `{st.target}[*]` or `{st.target}[-1]`",))
        ok = False
    if isinstance(hydra, ir.Hydra) and st.heads is None:
        c.error(st.target_span, "with a hydra split, an intervention names the heads it "
                "changes", code="heads",
                help=(f"e.g. `intervene {st.target}[...] of heads[1]` (head 0 is usually "
                      "the untouched reference)",))
        ok = False
    heads = checked_heads(c, st.heads, hydra, "`intervene`")
    keys = c.assigns(st.body or (), vocab.INTERVENE_KEYS, "`intervene` key")
    operation = _operation(c, st, keys, kind)
    channels = _units(c, keys["channels"].value, st.target, kind) if "channels" in keys else None
    positions = (_positions(c, keys["positions"].value) if "positions" in keys
                 else ir.Positions(kind=vocab.DEFAULT_POSITIONS, span=st.span))
    if not ok or BAD in (heads, operation, channels, positions):
        return BAD
    return ir.Intervention(target=st.target, target_kind=kind, layers=st.layers, heads=heads,
                           operation=operation, channels=channels, positions=positions,
                           span=st.span, target_span=st.target_span)


def _target_kind(c: Checker, st: sx.InterveneStmt) -> object:
    target, span = st.target, st.target_span
    if target in vocab.READOUT_SITES:
        what, instead = vocab.READOUT_SITES[target]
        return c.error(span, f"`{target}` is a readout ({what}) and cannot be intervened on",
                       code="target", help=(instead,))
    if target in vocab.TARGET_SITES:
        return "site"
    if target in vocab.MODEL_SITES:
        return c.error(span, f"`{target}` is model-wide; `intervene` takes a per-layer site or "
                       "a module role", code="target",
                       help=("e.g. `resid_in[0]` for what the embedding feeds the first layer"
                             if target == "embed" else "e.g. `resid_out[-1]`",))
    if target in ALL_ROLES:
        return "norm" if target in ALL_NORM_ROLES else "linear"
    return c.unknown(span, "intervention target", target, (*vocab.TARGET_SITES, *ALL_ROLES))


def _operation(c: Checker, st: sx.InterveneStmt, keys: dict, kind: object) -> object:
    scale = c.number(keys["scale"].value, "scale") if "scale" in keys else None
    if "set" in keys and "add" in keys:
        return c.error(keys["add"].key_span, "an intervention has exactly one operation; this "
                       "one has `set` and `add`", code="operation",
                       help=("write two `intervene` statements on different heads",))
    if "set" in keys:
        if "scale" in keys:
            return c.error(keys["scale"].key_span, "`scale` goes with `add` or stands alone, "
                           "not with `set`", code="operation",
                           help=("drop `scale`, or write `scale = S` as its own intervention",))
        return _set(c, keys["set"], st.target, kind)
    if "add" in keys:
        return _add(c, keys["add"], scale, keys.get("scale"))
    if "scale" in keys:
        return BAD if scale is BAD else ir.Operation(kind="scale", scale=scale,
                                                     span=keys["scale"].span)
    return c.error(st.target_span, "`intervene` needs an operation", code="missing",
                   help=(f"add one of {OPERATIONS_HELP}",))


def _set(c: Checker, assign: sx.Assign, target: str, kind: object) -> object:
    value = assign.value
    if isinstance(value, sx.Ident) and value.name == "zero":
        return ir.Operation(kind="zero", span=assign.span)
    if isinstance(value, sx.Ident) and value.name in vocab.SET_VALUES:
        return c.error(value.span, f"`set = {value.name}` reads an earlier run", code="type",
                       help=(f'write `{value.name}(run = "DIR")`',))
    if isinstance(value, sx.Call) and value.name == "zero":
        return c.error(value.span, "`zero` takes no arguments", code="type",
                       help=("write `set = zero`",))
    if not isinstance(value, sx.Ident | sx.Call):
        return c.error(value.span, f"`set` must be {one_of(vocab.SET_VALUES)}, found "
                       f"{describe(value)}", code="type", help=(OPERATIONS_HELP,))
    if value.name not in vocab.SET_VALUES:
        return c.unknown(value.span, "`set` value", value.name, vocab.SET_VALUES)
    args = c.kwargs(value, ("run",), required=("run",))
    run = BAD if args is BAD else c.string(args["run"], "run")
    if kind == "site" or kind is BAD:
        return BAD if BAD in (run, kind) else ir.Operation(kind=value.name, run=run,
                                                           span=assign.span)
    what = "`dataset_mean`" if value.name == "mean" else "`full`"
    return c.error(value.span, f"`set = {value.name}(...)` reads the {what} capture of a site, "
                   f"and `{target}` is a module", code="operation",
                   help=("intervene on a site such as `mlp_out[...]`, or use `set = zero` "
                         "here",))


def _add(c: Checker, assign: sx.Assign, scale: object, scale_assign: sx.Assign | None) -> object:
    value = assign.value
    if not isinstance(value, sx.Call) or value.name != "vector":
        return c.error(value.span, f"`add` takes `vector(run = \"DIR\", key = \"KEY\")`, found "
                       f"{describe(value)}", code="type")
    args = c.kwargs(value, ("run", "key"), required=("run", "key"))
    if args is BAD:
        return BAD
    run, key = c.string(args["run"], "run"), c.string(args["key"], "key")
    if BAD in (run, key, scale):
        return BAD
    return ir.Operation(kind="add", run=run, key=key, scale=scale, span=assign.span)


def _units(c: Checker, value: sx.Value, target: str, kind: object) -> object:
    if isinstance(value, sx.ListValue):
        indices = _indices(c, value, "channels", minimum=0)
        return BAD if indices is BAD else ir.Units(kind="list", indices=indices, span=value.span)
    if isinstance(value, sx.Ident) and value.name in vocab.UNIT_KINDS:
        return c.error(value.span, f"`{value.name}` needs its arguments", code="type",
                       help=(_UNITS_EXAMPLE[value.name],))
    if not isinstance(value, sx.Call):
        return c.error(value.span, "`channels` must be a list of indices, `lowest(...)`, "
                       f"`highest(...)` or `random(...)`, found {describe(value)}", code="type")
    if value.name not in vocab.UNIT_KINDS:
        return c.unknown(value.span, "`channels` selection", value.name, vocab.UNIT_KINDS)
    scored = value.name != "random"
    allowed = ("run", "metric", "fraction", "count") if scored else ("fraction", "count", "seed")
    args = c.kwargs(value, allowed, required=("run", "metric") if scored else ())
    if args is BAD:
        return BAD
    how_many = _how_many(c, value, args)
    fields: dict = {}
    if scored:
        fields["run"] = c.string(args["run"], "run")
        fields["metric"] = _scoring_metric(c, args["metric"], value, target, kind)
    elif "seed" in args:
        fields["seed"] = c.integer(args["seed"], "seed", minimum=0, maximum=vocab.SEED_MAX)
    if how_many is BAD or BAD in fields.values():
        return BAD
    return ir.Units(kind=value.name, **how_many, **fields, span=value.span)


_UNITS_EXAMPLE = {
    "lowest": 'e.g. `lowest(run = "runs/scores", metric = channel_contribution, fraction = 0.25)`',
    "highest": 'e.g. `highest(run = "runs/scores", metric = channel_contribution, count = 8)`',
    "random": "e.g. `random(fraction = 0.25, seed = 0)`",
}


def _how_many(c: Checker, call: sx.Call, args: dict) -> object:
    """`fraction = F` (0 < F < 1) or `count = K` (K >= 1): exactly one of them."""
    if "fraction" in args and "count" in args:
        return c.error(args["count"].span, f"`{call.name}(...)` takes `fraction` or `count`, "
                       "not both", code="type")
    if "count" in args:
        count = c.integer(args["count"], "count", minimum=1)
        return BAD if count is BAD else {"count": count}
    if "fraction" not in args:
        return c.error(call.span, f"`{call.name}(...)` needs `fraction = F` or `count = K`",
                       code="missing", help=(_UNITS_EXAMPLE[call.name],))
    fraction = c.number(args["fraction"], "fraction")
    if fraction is not BAD and not 0 < fraction < 1:
        return c.error(args["fraction"].span, f"`fraction` must lie strictly between 0 and 1, "
                       f"found {args['fraction'].text}", code="range",
                       help=("e.g. `fraction = 0.25`; or choose a number with `count = K`",))
    return BAD if fraction is BAD else {"fraction": fraction}


def _scoring_metric(c: Checker, value: sx.Value, call: sx.Call, target: str,
                    kind: object) -> object:
    metric = c.word(value, "metric", vocab.METRICS)
    if metric is BAD or kind is BAD:
        return BAD
    if kind == "site":
        return c.error(call.span, f"`{call.name}(...)` reads a module's importance scores, and "
                       f"`{target}` is a site", code="target",
                       help=("intervene on a module role such as `mlp.down_proj[...]`, or "
                             "select channels with a list or `random(...)`",))
    modules = vocab.METRICS[metric].modules
    if not fits(modules, target):
        return c.error(value.span, f"`{metric}` does not score `{target}`", code="metric-module",
                       help=(fit_help(modules),))
    return metric


def _indices(c: Checker, value: sx.ListValue, key: str, *, minimum: int | None) -> object:
    """The integers of a non-empty list without repeats (>= `minimum` when given)."""
    if not value.items:
        return c.error(value.span, f"`{key}` must not be empty", code="range")
    out: list[int] = []
    for item in value.items:
        number = c.integer(item, key, minimum=-vocab.INT_MAX if minimum is None else minimum)
        if number is BAD:
            return BAD
        if number in out:
            return c.error(item.span, f"{key} index {number} is listed twice", code="duplicate")
        out.append(number)
    return tuple(out)


def _positions(c: Checker, value: sx.Value) -> object:
    if isinstance(value, sx.Ident) and value.name in vocab.POSITION_WORDS:
        return ir.Positions(kind=value.name, span=value.span)
    if isinstance(value, sx.ListValue):
        indices = _indices(c, value, "positions", minimum=None)
        return BAD if indices is BAD else ir.Positions(kind="list", indices=indices,
                                                       span=value.span)
    if isinstance(value, sx.Call) and value.name == "field":
        name = field_call(c, value)
        return BAD if name is BAD else ir.Positions(kind="field", field=name, span=value.span)
    words = (*vocab.POSITION_WORDS, "[i, ...]", 'field("name")')
    if isinstance(value, sx.Ident):
        return c.unknown(value.span, "positions", value.name, vocab.POSITION_WORDS)
    return c.error(value.span, f"`positions` must be {one_of(words)}, found {describe(value)}",
                   code="type")


# effects ------------------------------------------------------------------------------
def effect(c: Checker, st: sx.EffectStmt, hydra: object) -> object:
    spec = vocab.EFFECT_METRICS.get(st.metric)
    if spec is None:
        return c.unknown(st.metric_span, "effect metric", st.metric, vocab.EFFECT_METRICS)
    needs_vs, _, param_names = spec
    heads = checked_heads(c, st.heads, hydra, f"`effect {st.metric}`")
    reference = _reference(c, st, hydra, needs_vs)
    if isinstance(hydra, ir.Hydra) and isinstance(reference, int) and \
            isinstance(heads, ir.IndexSelector) and reference in heads.resolve(hydra.heads):
        heads = c.error(heads.span, f"head {reference} is the reference (`vs heads[{reference}]`)"
                        ": comparing it with itself measures nothing", code="heads",
                        help=(f"leave it out, e.g. `of heads[{1 if reference == 0 else 0}]`",))
    params = _effect_params(c, st, param_names)
    if BAD in (heads, reference, params):
        return BAD
    return ir.Effect(metric=st.metric, heads=heads, reference=reference, name=st.name,
                     span=st.span, **params)


def _reference(c: Checker, st: sx.EffectStmt, hydra: object, needs_vs: bool) -> object:
    """The `vs heads[R]` head as a number in 0..heads-1, or None."""
    ref = st.reference
    if ref is None:
        if not needs_vs:
            return None
        if hydra is None:
            return c.error(st.metric_span, f"`{st.metric}` compares a head with a reference "
                           "head: it needs a hydra split and `vs heads[R]`", code="heads",
                           help=("add `hydra { trunk = auto  heads = 2 }` and `vs heads[0]`",))
        return c.error(st.metric_span, f"`{st.metric}` compares each head with a reference: "
                       "say which one", code="heads", help=(f"e.g. `effect {st.metric} vs heads[0]`",))
    if hydra is None:
        return c.error(ref.span, "`vs heads[...]` compares heads of a hydra split, and this "
                       "experiment has none", code="heads",
                       help=("add a `hydra { ... }` block or drop `vs heads[...]`",))
    if not needs_vs:
        return c.error(ref.span, f"`{st.metric}` measures each head on its own; it takes no "
                       "`vs`", code="heads", help=("drop `vs heads[...]`",))
    if ref.all or len(ref.items) != 1 or not isinstance(ref.items[0], int):
        return c.error(ref.span, "`vs` names one reference head", code="heads",
                       help=("e.g. `vs heads[0]`",))
    if not isinstance(hydra, ir.Hydra):
        return BAD
    index = ref.items[0]
    if not -hydra.heads <= index < hydra.heads:
        return c.error(ref.span, f"head {index} is out of range: hydra has {hydra.heads} heads "
                       f"(0..{hydra.heads - 1})", code="range")
    return index % hydra.heads


def _effect_params(c: Checker, st: sx.EffectStmt, names: tuple[str, ...]) -> object:
    body = st.body or ()
    if body and not names:
        return c.error(body[0].key_span, f"`{st.metric}` takes no parameters", code="unknown")
    given = c.assigns(body, names, f"`{st.metric}` parameter")
    out: dict = {}
    if "mask" in given:
        out["mask"] = checked_mask(c, given["mask"].value)
    if "aggregate" in given:
        out["aggregate"] = _pooling(c, given["aggregate"].value)
    if "at" in given:
        place = _at(c, given["at"].value)
        out["at_site"], out["at_layer"] = (BAD, BAD) if place is BAD else place
    elif st.metric == "cosine":
        out["at_site"] = c.error(st.metric_span, "`cosine` compares the vectors at one site: "
                                 "say where", code="missing", help=("e.g. `{ at = resid_out[3] }`",))
    for key in ("correct", "wrong"):
        if key in given:
            out[key] = _token_field(c, given[key].value, key)
        elif key in names:
            out[key] = c.error(st.metric_span, f"`{st.metric}` needs `{key} = field(\"name\")`",
                               code="missing", help=('e.g. `{ correct = field("answer"), '
                                                     'wrong = field("distractor") }`',))
    if len(given) != len(body) or BAD in out.values():
        return BAD
    return out


def _pooling(c: Checker, value: sx.Value) -> object:
    pooled = aggregate(c, value)
    if isinstance(pooled, ir.Aggregate) and pooled.mode != "mean":
        return c.error(value.span, f"`cosine` pools each head's vectors with `mean(mask = M)`, "
                       f"found `{pooled.mode}`", code="type", help=("e.g. `mean(mask = last)`",))
    return pooled


def _at(c: Checker, value: sx.Value) -> object:
    """`at = SITE[L]`: a per-layer site at one layer (counted from 0)."""
    if not isinstance(value, sx.Indexed):
        return c.error(value.span, f"`at` must be a site at one layer, found {describe(value)}",
                       code="type", help=("e.g. `at = resid_out[3]`",))
    if value.name not in vocab.TARGET_SITES:
        if value.name in vocab.SITES:
            return c.error(value.span, f"`at` needs a per-layer site, and `{value.name}` is "
                           f"{'a readout' if value.name in vocab.READOUT_SITES else 'model-wide'}",
                           code="selector", help=("e.g. `at = resid_out[3]`",))
        return c.unknown(value.span, "site", value.name, vocab.TARGET_SITES)
    layers = value.layers
    if layers.all or len(layers.items) != 1 or not isinstance(layers.items[0], int) \
            or layers.items[0] < 0:
        return c.error(layers.span, "`at` names one layer, counted from 0", code="selector",
                       help=(f"e.g. `at = {value.name}[3]`",))
    return value.name, layers.items[0]


def _token_field(c: Checker, value: sx.Value, key: str) -> object:
    if isinstance(value, sx.Call) and value.name == "field":
        return field_call(c, value)
    return c.error(value.span, f"`{key}` names the data field holding the token, found "
                   f"{describe(value)}", code="type", help=(f'write `{key} = field("name")`',))


def duplicate_effects(c: Checker, effects: Iterable[ir.Effect], hydra: ir.Hydra | None) -> None:
    """Two effects that would write the same `effect/{name}[/head{h}]` keys."""
    written: dict[str, tuple[ir.Effect, set]] = {}
    for e in effects:
        heads = _effect_heads(e, hydra)
        first = written.get(e.key_name)
        if first is not None and first[1] & heads:
            c.error(e.span, f"this effect writes the same `effect/{e.key_name}` keys as the "
                    f"effect on line {first[0].span.line}", code="duplicate",
                    help=("give one of them its own name with `as NAME`",))
        else:
            written[e.key_name] = (e, heads | (first[1] if first else set()))


def _effect_heads(e: ir.Effect, hydra: ir.Hydra | None) -> set:
    if hydra is None:
        return {None}
    if e.heads is not None:
        return set(e.heads.resolve(hydra.heads))
    return set(range(hydra.heads)) - {e.reference}


def field_uses(interventions: Iterable[ir.Intervention], effects: Iterable[ir.Effect]) -> list:
    """Every `field("m")` per-token mask the statements read (positions, effect masks)."""
    out: list = [iv.positions for iv in interventions if iv.positions.kind == "field"]
    for e in effects:
        out.extend(m for m in (e.mask, e.aggregate.mask if e.aggregate else None)
                   if m is not None and m.kind == "field")
    return out
