"""The checked experiment as frozen attrs data: what the compiler and the runtime consume.

Every node keeps the span of the source it came from (for diagnostics raised later, e.g. by
the runtime about data), but spans do not take part in equality: two specs that say the
same thing compare equal however they are laid out. Change nodes only with `attrs.evolve`.
"""

from __future__ import annotations

from typing import Any

import attrs

from expc.spec.diagnostics import Span
from expc.spec.vocabulary import (BUILTIN_PREFIX, DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE,
                                  DEFAULT_WINDOW)

NO_SPAN = Span(path="<none>")  # for nodes built in code rather than parsed


def _span_field() -> Any:
    return attrs.field(default=NO_SPAN, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class Slice:
    """A half-open range `start:stop`; either end may be open, negatives count from the end."""

    start: int | None = None
    stop: int | None = None

    def text(self) -> str:
        return f"{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}"


@attrs.frozen(kw_only=True)
class IndexSelector:
    """`[*]`, `[i]`, `[a:b]` or a list of those: which layers (or Hydra heads) to take.

    `items` is empty for `*`. Indices are global; negatives count back from `n`.
    """

    all: bool = False
    items: tuple[int | Slice, ...] = ()
    span: Span = _span_field()
    item_spans: tuple[Span, ...] = attrs.field(default=(), eq=False, repr=False)

    def span_of(self, item: int | Slice) -> Span:
        """Where `item` is written (the whole selector's span when unknown)."""
        for candidate, span in zip(self.items, self.item_spans):
            if candidate == item:
                return span
        return self.span

    def out_of_range(self, n: int) -> tuple[int, ...]:
        """The explicit indices that fall outside `0..n-1` (slices clamp like Python's)."""
        return tuple(i for i in self.items if isinstance(i, int) and not -n <= i < n)

    def resolve(self, n: int) -> tuple[int, ...]:
        """The selected indices in `0..n-1`, ascending and unique.

        Raises `IndexError` for an explicit index outside the range (checks report it first).
        """
        if self.all:
            return tuple(range(n))
        chosen: set[int] = set()
        for item in self.items:
            if isinstance(item, Slice):
                chosen.update(range(n)[item.start:item.stop])
            elif -n <= item < n:
                chosen.add(item % n)
            else:
                raise IndexError(f"index {item} is out of range for {n} entries")
        return tuple(sorted(chosen))

    def text(self) -> str:
        """The selector as written in the language, without brackets: `*`, `-1`, `1:3, 5`."""
        if self.all:
            return "*"
        return ", ".join(i.text() if isinstance(i, Slice) else str(i) for i in self.items)


LayerSelector = IndexSelector
HeadSelector = IndexSelector


@attrs.frozen(kw_only=True)
class ModelRef:
    """`builtin:NAME` or a checkpoint folder, as written (relative to the working directory)."""

    path: str
    span: Span = _span_field()

    @property
    def builtin_name(self) -> str | None:
        return self.path[len(BUILTIN_PREFIX):] if self.path.startswith(BUILTIN_PREFIX) else None


@attrs.frozen(kw_only=True)
class Hydra:
    """The split: layers `0..trunk-1` shared, `heads` variants of the rest.

    `trunk = None` is `trunk = auto`: the deepest split that keeps every intervention inside
    the heads (resolved with the model's layer count by `models.hydra_split.HydraSplit.of`).
    `head_models`, when given, holds one checkpoint folder per head for its layers.
    """

    trunk: int | None
    heads: int
    head_models: tuple[str, ...] = ()
    span: Span = _span_field()
    trunk_span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Source:
    """Where samples come from: `jsonl` records, `text` lines, pre-tokenised `tokens`, or the
    rows of `parquet` files (a glob) or of a saved Hugging Face dataset (`hf_dataset`)."""

    kind: str  # jsonl | text | tokens | parquet | hf_dataset
    path: str  # a file; a glob for parquet; the `save_to_disk` folder for hf_dataset
    field: str | None = None  # record field with the text (jsonl, tables) or the ids (tokens)
    mask_field: str | None = None  # optional per-token 0/1 list in each record
    split: str | None = None  # hf_dataset: a saved DatasetDict's split (None: `train`)
    span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Data:
    source: Source
    batch_size: int = DEFAULT_BATCH_SIZE
    max_length: int | None = None  # tokens; None = the model's maximum
    limit: int | None = None  # samples; None = all
    window: int = DEFAULT_WINDOW  # batches read, tokenised and sorted by length together
    span: Span = _span_field()
    max_length_span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Mask:
    """Which tokens a reduction covers: `attention` (non-padding), `last`, `first`, `field`."""

    kind: str
    field: str | None = None  # the record field for kind == "field"
    span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Aggregate:
    """How captured activations are kept: none | full | mean | sum | max | dataset_mean."""

    mode: str
    mask: Mask | None = None  # None for `none` and `full`
    span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Capture:
    site: str
    layers: LayerSelector | None  # None for the model-wide sites embed, final_norm, logits
    heads: HeadSelector | None = None  # `of heads[...]`; None = every head
    name: str | None = None  # the `as` name
    aggregate: Aggregate
    span: Span = _span_field()

    @property
    def key_name(self) -> str:
        """The name its result keys use: the `as` name, else the site."""
        return self.name or self.site


@attrs.frozen(kw_only=True)
class Param:
    name: str
    value: int | float | str | bool | None
    span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Importance:
    metric: str
    module: str  # a role after Hugging Face's Llama, e.g. "mlp.down_proj"
    layers: LayerSelector
    heads: HeadSelector | None = None
    params: tuple[Param, ...] = ()  # every parameter of the metric, defaults filled in
    span: Span = _span_field()
    module_span: Span = _span_field()

    def param(self, name: str) -> Any:
        for p in self.params:
            if p.name == name:
                return p.value
        raise KeyError(f"metric {self.metric} has no parameter {name!r}")


@attrs.frozen(kw_only=True)
class Output:
    dir: str
    checkpoint_every: int = 0  # batches; 0 = no intermediate checkpoints
    shard_size: int = DEFAULT_SHARD_SIZE  # bytes of per-sample rows per results shard
    span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Experiment:
    name: str
    path: str = attrs.field(default="", eq=False)  # the spec file it was loaded from
    model: ModelRef
    dtype: str = "float32"
    device: str = "auto"
    seed: int = 0
    compile: bool = False
    hydra: Hydra | None = None
    data: Data
    captures: tuple[Capture, ...] = ()
    importances: tuple[Importance, ...] = ()
    interventions: tuple[Intervention, ...] = ()
    effects: tuple[Effect, ...] = ()
    output: Output
    span: Span = _span_field()
    device_span: Span = _span_field()  # the `device = ...` value (the experiment's, if unset)


@attrs.frozen(kw_only=True)
class Units:
    """`channels = ...`: which channels (or KV-head groups at `self_attn.o_proj`) change.

    `list`: `indices` as written; `lowest`/`highest`: the `fraction` or `count` lowest- or
    highest-scored units of `metric` at the same module and layer in run folder `run`;
    `random`: `fraction` or `count` units drawn with `seed`.
    """

    kind: str  # list | lowest | highest | random
    indices: tuple[int, ...] = ()
    run: str | None = None
    metric: str | None = None
    fraction: float | None = None
    count: int | None = None
    seed: int = 0
    span: Span = _span_field()

    def wanted(self, total: int) -> int:
        """K of `lowest`/`highest`/`random` over `total` units: `count`, else
        `round(fraction * total)` (Python's `round`), before any range check."""
        return self.count if self.count is not None else round(self.fraction * total)


@attrs.frozen(kw_only=True)
class Positions:
    """`positions = all | first | last | [i, ...] | field("name")`: which tokens change."""

    kind: str  # all | first | last | list | field
    indices: tuple[int, ...] = ()
    field: str | None = None
    span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Operation:
    """Exactly one of `set = zero | mean(run) | patch(run)`, `add = vector(run, key)` (with an
    optional `scale`), or `scale = S` alone."""

    kind: str  # zero | mean | patch | add | scale
    run: str | None = None  # mean, patch, add: the run folder the values come from
    key: str | None = None  # add: the stored vector's key in `run`
    scale: float | None = None  # add: multiplies the vector (default 1); scale: the factor
    span: Span = _span_field()


@attrs.frozen(kw_only=True)
class Intervention:
    """`intervene TARGET[layers] [of heads[...]] { operation, channels, positions }`.

    TARGET is a per-layer capture site (`target_kind = "site"`: the value at the marker), a
    linear module role (`"linear"`: the module's input channels) or a norm module role
    (`"norm"`: the norm's output channels).
    """

    target: str
    target_kind: str  # site | linear | norm
    layers: LayerSelector
    heads: HeadSelector | None = None
    operation: Operation
    channels: Units | None = None  # None: every channel
    positions: Positions = Positions(kind="all")
    span: Span = _span_field()
    target_span: Span = _span_field()  # the TARGET[LAYERS] part


@attrs.frozen(kw_only=True)
class Effect:
    """`effect METRIC [of heads[...]] [vs heads[R]] [as NAME] [{ params }]` (contracts §5)."""

    metric: str  # kl | top1 | loss | logit_diff | cosine
    heads: HeadSelector | None = None  # None: every head (but the reference)
    reference: int | None = None  # `vs heads[R]`
    name: str | None = None  # `as NAME`
    mask: Mask | None = None  # kl, top1: the tokens averaged over (default attention)
    at_site: str | None = None  # cosine: `at = SITE[L]`
    at_layer: int | None = None
    aggregate: Aggregate | None = None  # cosine: how the vectors are pooled (mean(mask))
    correct: str | None = None  # logit_diff: data field with the correct token
    wrong: str | None = None  # logit_diff: data field with the wrong token
    span: Span = _span_field()

    @property
    def key_name(self) -> str:
        return self.name or self.metric
