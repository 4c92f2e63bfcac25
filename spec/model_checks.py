"""Checks of a lowered experiment against the model's shape, the files it names and the
machine it would run on — everything the run would otherwise reject late.

Against the model: layer indices in range, `0 <= trunk < n_layers` (or `auto`), module roles
and capture sites the architecture has, interventions and effects (`intervention_checks`) (no `logits` on an encoder), heads selectors that reach layers
inside the heads, `max_length` within the model's positions, a model that fits in memory —
and two statements that would write the same result key (that check also runs without a
model, on what the selectors say on their own). Against the files and the machine: the data
files present with the columns a table source reads (`data_files`), enough batches for `iterative_channel`'s rounds, the CUDA device present.
"""

from __future__ import annotations

from expc.spec import ir
from expc.spec.data_files import check_source
from expc.spec.data_size import count_batches, count_samples
from expc.spec.devices import DEVICE_HELP, cuda_problem, visible_gpus
from expc.spec.diagnostics import Diagnostic, DiagnosticError, error
from expc.spec.intervention_checks import check_interventions, split_trunk
from expc.spec.model_shape import ModelShape
from expc.spec.model_size import GIB, layer_copies, layer_parameters, machine_memory, model_bytes
from expc.spec.vocabulary import AUTO_TRUNK, LAYER_TARGET, LM_HEAD_SITES


_STATIC_LIMIT = 4096  # wider literal slices are compared only once the layer count is known


def check_against_model(exp: ir.Experiment, shape: ModelShape) -> list[Diagnostic]:
    n = shape.n_layers
    out: list[Diagnostic] = []
    model = f"`{exp.model.path}`"
    trunk = split_trunk(exp.hydra, exp.interventions, n)
    if exp.hydra is not None and exp.hydra.trunk is not None and exp.hydra.trunk >= n:
        out.append(error(exp.hydra.trunk_span, f"hydra trunk = {exp.hydra.trunk} leaves no "
                         f"layers for the heads: {model} has {n} layers", code="range",
                         help=(f"0 <= trunk < {n}, or `trunk = {AUTO_TRUNK}`",)))
        trunk = n

    def layers_in_range(selector: ir.IndexSelector) -> tuple[int, ...] | None:
        bad = selector.out_of_range(n)
        if bad:
            out.append(error(selector.span_of(bad[0]), f"layer {bad[0]} is out of range: {model} "
                             f"has {n} layers (0..{n - 1}, or -{n}..-1 from the end)",
                             code="range"))
            return None
        chosen = selector.resolve(n)
        if not chosen:
            out.append(error(selector.span, f"`[{selector.text()}]` selects no layer of the {n}",
                             code="range"))
            return None
        return chosen

    def heads_reach(selector: ir.IndexSelector | None, layers: tuple[int, ...] | None) -> None:
        if selector is not None and layers is not None and all(L < trunk for L in layers):
            out.append(error(selector.span, f"`of heads[...]` selects nothing: layers "
                             f"{', '.join(map(str, layers))} sit in the shared trunk "
                             f"(layers 0..{trunk - 1})", code="heads",
                             help=("drop `of heads[...]`",)))

    for cap in exp.captures:
        if cap.layers is not None:
            heads_reach(cap.heads, layers_in_range(cap.layers))
    for imp in exp.importances:
        layers = layers_in_range(imp.layers)
        heads_reach(imp.heads, layers)
        if imp.module not in (*shape.modules, LAYER_TARGET):
            out.append(shape.no_module(imp.module, imp.module_span))
    for cap in exp.captures:
        why = shape.facts.missing_site(cap.site)
        if why is not None:
            out.append(error(cap.span, f"{shape.model_type} models have no `{cap.site}`: {why}",
                             code="site", help=(("capture `final_norm` for the last hidden "
                                                 "state",) if cap.site in LM_HEAD_SITES else ())))
    if exp.data.max_length is not None and exp.data.max_length > shape.max_positions:
        out.append(error(exp.data.max_length_span, f"max_length = {exp.data.max_length} exceeds "
                         f"the model's {shape.max_positions} positions", code="range",
                         help=("leave `max_length` out to use the model's maximum",)))
    out.extend(check_interventions(exp, shape, trunk=trunk, layers_of=layers_in_range))
    out.extend(_memory(exp, shape, trunk))
    out.extend(duplicate_keys(exp, n_layers=n, trunk=trunk))
    return out


def _memory(exp: ir.Experiment, shape: ModelShape, trunk: int) -> list[Diagnostic]:
    """A model too large for this machine, with the estimate of what it would need."""
    need = model_bytes(shape, hydra=exp.hydra, trunk=trunk, dtype=exp.dtype)
    have = machine_memory()
    if have is None or need <= have:
        return []
    copies = layer_copies(shape, exp.hydra, trunk)
    split = exp.hydra is not None and copies != shape.n_layers
    where = exp.hydra.span if split else exp.model.span
    built = (f"{copies:,} layer copies (trunk {trunk}, {exp.hydra.heads:,} heads x "
             f"{shape.n_layers - trunk} layers)" if split else f"{copies:,} layers")
    return [error(where, f"the model would need about {need / GIB:,.1f} GiB: {built} of "
                  f"{layer_parameters(shape):,} parameters in {exp.dtype}; this machine has "
                  f"{have / GIB:,.1f} GiB", code="memory",
                  help=("fewer heads or layers, or `dtype = bfloat16`",))]


def check_files(exp: ir.Experiment) -> list[Diagnostic]:
    """What this machine and its files allow: the data file present (paths resolve against
    the working directory), enough batches for `iterative_channel`, the CUDA device."""
    out = []
    problem = cuda_problem(exp.device, visible_gpus())
    if problem is not None:
        out.append(error(exp.device_span, problem, code="device", help=DEVICE_HELP))
    token_fields = tuple(name for e in exp.effects if e.correct is not None
                         for name in (e.correct, e.wrong))
    problems = check_source(exp.data.source, token_fields=token_fields)
    if problems:
        return [*out, *problems]
    return [*out, *_iteration_batches(exp)]


def _iteration_batches(exp: ir.Experiment) -> list[Diagnostic]:
    """`iterative_channel` prunes in `iterations` rounds of at least one batch each."""
    rounds = [imp for imp in exp.importances if imp.metric == "iterative_channel"]
    if not rounds:
        return []
    try:
        samples = count_samples(exp.data.source, limit=exp.data.limit)
    except DiagnosticError as exc:
        return list(exc.diagnostics)
    batches = count_batches(samples, exp.data.batch_size)
    out = []
    for imp in rounds:
        iterations = imp.param("iterations")
        if iterations > batches:
            span = next((p.span for p in imp.params if p.name == "iterations"
                         and p.span != ir.NO_SPAN), imp.span)
            out.append(error(span, f"iterative_channel with iterations = {iterations} needs at "
                             f"least {iterations} batches (one per round); the data gives "
                             f"{batches} ({samples} samples, batch_size {exp.data.batch_size})",
                             code="iterations",
                             help=(f"iterations <= {batches}, a smaller batch_size, or more "
                                   "data",)))
    return out


def duplicate_keys(exp: ir.Experiment, *, n_layers: int | None = None,
                   trunk: int | None = None) -> list[Diagnostic]:
    """Two statements that would produce the same result key.

    With `n_layers` selectors resolve exactly; without, `*` overlaps everything and
    negative or open-ended selectors overlap only a selector written the same way.
    Each statement is compared only with earlier ones of its key that share a layer
    (`_EarlierStatements`), so 30 000 statements check in linear time.
    """
    out = []
    captures: dict[str, _EarlierStatements] = {}
    for cap in exp.captures:
        if cap.aggregate.mode == "none":
            continue
        earlier = captures.setdefault(cap.key_name, _EarlierStatements(n_layers))
        prev = earlier.first_overlap(cap.layers, cap.heads, exp.hydra)
        if prev is not None:
            out.append(error(cap.span, f"this capture writes the same `{cap.key_name}` keys as "
                             f"the capture on line {prev.span.line}", code="duplicate",
                             help=("give one of them its own name with `as NAME`",)))
        earlier.add(cap, cap.layers)
    importances: dict[tuple[str, str], _EarlierStatements] = {}
    for imp in exp.importances:
        earlier = importances.setdefault((imp.metric, imp.module), _EarlierStatements(n_layers))
        prev = earlier.first_overlap(imp.layers, imp.heads, exp.hydra)
        if prev is not None:
            out.append(error(imp.span, f"`{imp.metric}` at `{imp.module}` is already computed "
                             f"on line {prev.span.line} for some of these layers",
                             code="duplicate",
                             help=("merge the two selectors into one statement",)))
        earlier.add(imp, imp.layers)
    interventions: dict[str, _EarlierStatements] = {}
    for iv in exp.interventions:
        earlier = interventions.setdefault(iv.target, _EarlierStatements(n_layers))
        prev = earlier.first_overlap(iv.layers, iv.heads, exp.hydra)
        if prev is not None:
            out.append(error(iv.span, f"`{iv.target}` is already intervened on at line "
                             f"{prev.span.line} for some of these layers and heads",
                             code="duplicate",
                             help=("one intervention per target, layer and head: change the "
                                   "layers or `of heads[...]`, or merge the two",)))
        earlier.add(iv, iv.layers)
    return out


class _EarlierStatements:
    """The earlier statements of one result key, indexed by the layers they name.

    A statement whose layers are known (resolved with the layer count, or literal without
    it) is filed under each layer; one whose layers are not (`*`, negative or open-ended
    selectors without a count) is compared with every later statement.
    """

    def __init__(self, n_layers: int | None):
        self.n_layers = n_layers
        self.order: dict[int, int] = {}  # id(statement) -> position, to report the first
        self.by_layer: dict[int | None, list] = {}  # layer (None: model-wide) -> statements
        self.unindexed: list[tuple[object, ir.IndexSelector]] = []

    def _layers(self, selector: ir.IndexSelector | None) -> set[int | None] | None:
        if selector is None:
            return {None}
        if self.n_layers is not None:
            if selector.out_of_range(self.n_layers):
                return set()  # reported as out of range instead
            return set(selector.resolve(self.n_layers))
        return None if selector.all else _static(selector)

    def add(self, statement, selector: ir.IndexSelector | None) -> None:
        self.order[id(statement)] = len(self.order)
        layers = self._layers(selector)
        if layers is None:
            self.unindexed.append((statement, selector))
        for layer in layers or ():
            self.by_layer.setdefault(layer, []).append((statement, selector))

    def first_overlap(self, selector: ir.IndexSelector | None, heads: ir.IndexSelector | None,
                      hydra: ir.Hydra | None):
        """The earliest statement whose layers and heads overlap these, or None."""
        layers = self._layers(selector)
        groups = [self.unindexed, *(self.by_layer.values() if layers is None
                                    else (self.by_layer.get(layer, ()) for layer in layers))]
        first = None
        for group in groups:  # each in statement order: its first overlap is its earliest
            for statement, prev_selector in group:
                if first is not None and self.order[id(statement)] >= self.order[id(first)]:
                    break
                if _overlap(prev_selector, selector, self.n_layers) and \
                        _heads_overlap(statement.heads, heads, hydra):
                    first = statement
                    break
        return first


def _overlap(a: ir.IndexSelector | None, b: ir.IndexSelector | None, n: int | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if n is not None:
        if a.out_of_range(n) or b.out_of_range(n):
            return False  # reported as out of range instead
        return bool(set(a.resolve(n)) & set(b.resolve(n)))
    if a.all or b.all or a == b:
        return True
    sa, sb = _static(a), _static(b)
    return sa is not None and sb is not None and bool(sa & sb)


def _heads_overlap(a: ir.IndexSelector | None, b: ir.IndexSelector | None,
                   hydra: ir.Hydra | None) -> bool:
    if a is None or b is None or hydra is None:
        return True
    if a.out_of_range(hydra.heads) or b.out_of_range(hydra.heads):
        return False
    return bool(set(a.resolve(hydra.heads)) & set(b.resolve(hydra.heads)))


def _static(sel: ir.IndexSelector) -> set[int] | None:
    """The indices a selector names without knowing the count, or None if that needs it."""
    out: set[int] = set()
    for item in sel.items:
        if isinstance(item, int):
            if item < 0:
                return None
            out.add(item)
        elif item.start is None or item.stop is None or item.start < 0 or item.stop < 0 \
                or item.stop - item.start > _STATIC_LIMIT:
            return None
        else:
            out.update(range(item.start, item.stop))
    return out

