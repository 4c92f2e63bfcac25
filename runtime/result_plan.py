"""What a run will write, before it runs: every result key with its shape, dtype and bytes.

`expc compile FILE --emit plan` prints it and `expc check` weighs its total against the
machine (`runtime/result_room.py`), so it imports no torch and reads no weights. The keys
are the compiler's plan's (`expc.compiler.plan`, which builds them with the run format's
key builders), in the order the runtime writes them (`runtime/state.py`,
`collect_results`). The shapes are what each state's `result()` gives — documented beside
its factory (`runtime/aggregate/create.py`, `runtime/importance/create.py`,
`runtime/effects/base.py`, `runtime/intervene/results.py`) — computed from the model's
config.json and the data: the sample count always, and the longest tokenised sample where a
tensor has a sequence axis (`full` captures, attention patterns), which is the only time
the data is tokenised. tests/runtime/test_result_plan.py runs specs of every site, mode,
metric, effect and intervention and holds this plan to the run's manifest, key for key.
"""

from __future__ import annotations

import math

import attrs

from expc.compiler.plan import CaptureEntry, InterventionEntry, MetricEntry, Plan, build_plan
from expc.models.tokenizer import load_tokenizer
from expc.runtime.data.samples import sample_tokens, source_samples
from expc.spec import ir, model_size
from expc.spec.model_shape import ModelShape, read_model_shape
from expc.spec.run_format import (PER_SAMPLE_MODES, SAMPLE_INDEX, TOKEN_COUNT, importance_key,
                                  intervention_key)
from expc.spec.vocabulary import METRICS

DTYPE_BYTES = {**model_size.DTYPE_BYTES, "int64": 8, "bool": 1}  # the model's, and ids/masks
SEQUENCE_SITES = ("attn_pattern",)  # a token's features hold the key axis, `[n_heads, S]`
INTEGER_METRICS = ("iterative_channel",)  # ranks and channel ids, int64; others float32
UNITS_FIELD = "channels"  # an intervention's one stored field


@attrs.frozen(kw_only=True)
class PlannedTensor:
    """One tensor the run will write."""

    key: str
    shape: tuple[int, ...]
    dtype: str  # as the manifest writes it: float32, bfloat16, int64, bool, ...
    per_sample: bool  # one row per sample (dim 0): the part that grows with the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


@attrs.frozen(kw_only=True)
class DataSize:
    """What the plan needed of the data."""

    samples: int
    longest: int | None  # tokens of the longest sample after truncation; None: not needed
    tokenised: bool  # whether the samples were tokenised (only to find `longest`)


@attrs.frozen(kw_only=True)
class ResultPlan:
    tensors: tuple[PlannedTensor, ...]
    data: DataSize

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def plan_results(experiment: ir.Experiment, *, shape: ModelShape | None = None,
                 plan: Plan | None = None) -> ResultPlan:
    """The exact result tensors of a checked experiment: reads the model's config.json and
    the data (tokenising it only when a tensor has a sequence axis). A line the run's reader
    refuses raises its diagnostic; what only tokens can show (a mask field of the wrong
    length) is left to the run. `shape` and `plan`: the model's shape and the compiler's
    plan, when the caller has them already."""
    shape = shape or read_model_shape(experiment.model.path, span=experiment.model.span)
    plan = plan or build_plan(experiment, n_layers=shape.n_layers)
    data = measure_data(experiment, shape, tokenise=needs_lengths(plan))
    return ResultPlan(tensors=planned_tensors(plan, shape, dtype=experiment.dtype, data=data),
                      data=data)


def needs_lengths(plan: Plan) -> bool:
    """Whether some tensor's shape holds the longest sample's length."""
    return any(e.mode == "full" or e.site in SEQUENCE_SITES for e in plan.captures)


def max_tokens(experiment: ir.Experiment, shape: ModelShape) -> int:
    """The most tokens a sample keeps: `max_length`, else the model's positions."""
    return experiment.data.max_length or shape.max_positions


def measure_data(experiment: ir.Experiment, shape: ModelShape, *, tokenise: bool) -> DataSize:
    """The samples the run will read, and (`tokenise`) the longest one's tokens, truncated
    as the run's loader truncates (`runtime/data/load.py`)."""
    source = experiment.data.source
    most = max_tokens(experiment, shape)
    tokenizer = (load_tokenizer(experiment.model.path)
                 if tokenise and source.kind != "tokens" else None)
    samples, longest = 0, 0
    reader = source_samples(source, limit=experiment.data.limit)
    try:
        for raw in reader:
            samples += 1
            if tokenise:
                longest = max(longest, min(len(sample_tokens(raw, tokenizer, most)), most))
    finally:
        reader.close()
    return DataSize(samples=samples, longest=longest if tokenise else None, tokenised=tokenise)


def planned_tensors(plan: Plan, shape: ModelShape, *, dtype: str,
                    data: DataSize) -> tuple[PlannedTensor, ...]:
    """Every result tensor of `plan` on a model of `shape` in `dtype` over `data`, in the
    order the runtime writes them; `data.longest` must be set when `needs_lengths(plan)`."""
    n = data.samples
    tensors = [t for entry in plan.captures
               for t in _capture_tensors(entry, shape, dtype=dtype, n=n, longest=data.longest)]
    tensors += [t for entry in plan.metrics for t in _metric_tensors(entry, shape)]
    tensors += [PlannedTensor(key=entry.key, shape=(n,), dtype="float32", per_sample=True)
                for entry in plan.effects]
    tensors += [_intervention_tensor(entry, shape) for entry in plan.interventions]
    tensors += [PlannedTensor(key=key, shape=(n,), dtype="int64", per_sample=True)
                for key in (SAMPLE_INDEX, TOKEN_COUNT)]
    return tuple(tensors)


def token_features(site: str, shape: ModelShape, *, longest: int | None) -> tuple[int, ...]:
    """The features `*F` of one token at `site` (what its marker sees after `[B, S]`)."""
    heads, kv_heads, head_dim = shape.n_heads, shape.n_kv_heads, shape.head_dim
    if site in SEQUENCE_SITES:
        return (heads, longest)
    return {"mlp_post": (shape.intermediate,), "values": (kv_heads * head_dim,),
            "q": (heads, head_dim), "z": (heads, head_dim), "k": (kv_heads, head_dim),
            "v": (kv_heads, head_dim), "lens": (shape.vocab,), "logits": (shape.vocab,),
            "router": (shape.n_experts,)}.get(site, (shape.hidden,))


def _capture_tensors(entry: CaptureEntry, shape: ModelShape, *, dtype: str, n: int,
                     longest: int | None) -> list[PlannedTensor]:
    features = token_features(entry.site, shape, longest=longest)
    per_sample = entry.mode in PER_SAMPLE_MODES

    def tensor(suffix: str, dims: tuple[int, ...], kind: str) -> PlannedTensor:
        return PlannedTensor(key=entry.key + suffix, shape=dims, dtype=kind,
                             per_sample=per_sample)

    if entry.mode == "full":
        rows = ((n, features[0], longest, longest) if entry.site in SEQUENCE_SITES
                else (n, longest, *features))  # patterns are stored [N, heads, S_q, S_k]
        return [tensor("", rows, dtype), tensor(".mask", (n, longest), "bool")]
    # Sums and means are taken in float32 at least (the spec's dtypes are float32 or
    # narrower); a max keeps the activations' dtype.
    if entry.mode == "dataset_mean":
        return [tensor("", features, "float32"), tensor(".var", features, "float32"),
                tensor(".count", (), "int64")]
    return [tensor("", (n, *features), dtype if entry.mode == "max" else "float32")]


def _metric_tensors(entry: MetricEntry, shape: ModelShape) -> list[PlannedTensor]:
    if entry.sites:  # a whole layer: one number
        dims: tuple[int, ...] = ()
    elif entry.metric == "kv_head_contribution":
        dims = (shape.n_kv_heads,)
    else:  # a linear module's input channels, a norm's channels
        kind = "norm" if entry.module in shape.norm_modules else "linear"
        dims = (shape.target_width(entry.module, kind),)
    dtype = "int64" if entry.metric in INTEGER_METRICS else "float32"
    return [PlannedTensor(key=importance_key(entry.metric, entry.module_path, field),
                          shape=dims, dtype=dtype, per_sample=False)
            for field, _ in METRICS[entry.metric].meaning]


def _intervention_tensor(entry: InterventionEntry, shape: ModelShape) -> PlannedTensor:
    """The units one intervention changes, `[K]` int64 (`runtime/intervene/units.py`)."""
    units = entry.intervention.channels
    total = shape.n_kv_heads if entry.kv_units else shape.target_width(entry.target, entry.kind)
    if units is None:
        count = total
    elif units.kind == "list":
        count = len(units.indices)
    else:
        count = units.wanted(total)
    return PlannedTensor(key=intervention_key(entry.target, entry.layer, entry.head,
                                              UNITS_FIELD),
                         shape=(count,), dtype="int64", per_sample=False)


def human_bytes(count: int) -> str:
    """`1536` -> `1.5 KiB`: binary units, one decimal (bytes as they are)."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            break
        size /= 1024
    return f"{count} B" if unit == "B" else f"{size:,.1f} {unit}"
