"""The plan: which graph site or module feeds which result key, and how.

`build_plan` turns the checked IR and the model's layer count into flat, frozen entries —
one per result key of contracts §3 — before any graph exists: a `CaptureEntry` names the
marker (site, global layer, Hydra head) and the aggregation; a `MetricEntry` names the
module path and the metric with its parameters (or, for a metric of whole layers, the
layer's path and the sites it reads). The passes only read the plan; the runtime
builds one state object per entry and hands them back as sinks keyed by `entry.key`.
An `InterventionEntry` names the marker or module one head's edit rewrites (the runtime
hands back an edit function per `entry.key`); an `EffectEntry` names the head and the
reference head whose outputs feed one effect sink.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from expc.models.hydra_split import HydraSplit
from expc.spec import ir
from expc.spec.diagnostics import Span
from expc.spec.model_shape import ATTENTION_OUTPUT
from expc.spec.run_format import capture_key, effect_key, importance_key, intervention_key
from expc.spec.vocabulary import LAYER_TARGET, LENS_SITE, METRICS, PER_HEAD_MODEL_SITES


@attrs.frozen(kw_only=True)
class CaptureEntry:
    """One captured tensor: the marker it reads and how it is aggregated."""

    key: str  # e.g. "capture/head1/resid_out_3"
    site: str
    name: str  # the `as` name, else the site
    layer: int | None
    head: int | None  # the head label of the marker: None in the trunk, for `embed`, unsplit
    mode: str  # full | mean | sum | max | dataset_mean
    mask: str | None = None  # attention | last | first | field
    field: str | None = None  # the data field of a `field(...)` mask
    span: Span | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class MetricEntry:
    """One importance metric at one module, or at one whole layer; its keys are
    `key + "/" + field`.

    A metric of whole layers (`at layers[...]`) names no module call: it reads the layer's
    `sites` (the markers of its layer and head, e.g. `resid_in` and `resid_out`), which the
    `effect_taps` pass feeds to its sink as (first, second), as a module's (input, output).
    """

    key: str  # e.g. "importance/l2_norm/head1/layers.3.mlp.down_proj"
    metric: str
    module: str  # the role, e.g. "mlp.down_proj"; `layers` for whole layers
    module_path: str  # e.g. "heads.1.layers.3.mlp.down_proj", or "heads.1.layers.3"
    layer: int
    head: int | None
    params: Mapping[str, object] = attrs.field(  # read-only; left out of the hash
        factory=dict, converter=lambda m: MappingProxyType(dict(m)), hash=False)
    sites: tuple[str, ...] = ()  # whole layers: the sites it reads; empty: the module's call
    span: Span | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class InterventionEntry:
    """One intervention at one layer of one head: where it rewrites the graph and how.

    `site` names the marker (`kind == "site"`); `module_path` the module whose input
    (`"linear"`) or output (`"norm"`) is rewritten. The runtime builds the edit function for
    `key` (the `intervention/.../channels` key prefix, less its field) from `intervention`.
    """

    key: str  # e.g. "intervention/head1/mlp.down_proj_3" (its tensors: key + "/channels")
    kind: str  # site | linear | norm
    target: str  # the site or module role as written, e.g. "mlp.down_proj"
    site: str | None  # kind == "site"
    module_path: str | None  # kind != "site", e.g. "heads.1.layers.3.mlp.down_proj"
    layer: int
    head: int | None  # None without a split
    intervention: ir.Intervention  # operation, channels, positions as checked
    span: Span | None = attrs.field(default=None, eq=False)

    @property
    def kv_units(self) -> bool:
        """Whether the units are KV-head groups: scored by `kv_head_contribution` at the
        attention output projection (every other selection names channels)."""
        units = self.intervention.channels
        return (self.kind == "linear" and self.target == ATTENTION_OUTPUT
                and units is not None and units.metric == "kv_head_contribution")


@attrs.frozen(kw_only=True)
class EffectEntry:
    """One effect of one head: which graph values feed it (the head's, the reference's)."""

    key: str  # e.g. "effect/kl/head1"
    metric: str
    head: int | None  # None without a split
    reference: int | None  # the `vs` head
    effect: ir.Effect  # parameters as checked
    span: Span | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class Plan:
    layout: HydraSplit  # the experiment's Hydra split of the model
    captures: tuple[CaptureEntry, ...] = ()
    metrics: tuple[MetricEntry, ...] = ()
    interventions: tuple[InterventionEntry, ...] = ()
    effects: tuple[EffectEntry, ...] = ()

    @property
    def module_metrics(self) -> tuple[MetricEntry, ...]:
        """The metrics read at a module's call (resolve labels that module)."""
        return tuple(e for e in self.metrics if not e.sites)

    @property
    def layer_metrics(self) -> tuple[MetricEntry, ...]:
        """The metrics of whole layers, read at their layer's markers (effect_taps)."""
        return tuple(e for e in self.metrics if e.sites)

    @property
    def keys(self) -> tuple[str, ...]:
        """Every sink key, in plan order."""
        return tuple(e.key for e in (*self.captures, *self.metrics, *self.effects))

    @property
    def layers_needed(self) -> int:
        """How many leading layers the plan reads: what a model must have built for it
        (`HydraTransformer.build(..., n_layers_built=...)`), so that a selective run builds,
        loads and traces no more. The one home of that rule: whatever the plan names at
        layer `L` (a capture, a metric, an intervention, `cosine`'s `at`) needs layers
        `0..L`; the model's output needs every layer and the final norm and LM head (the
        `final_norm` and `logits` sites, `lens`, which calls that norm and head, and every
        effect but `cosine`); `embed` alone needs none."""
        n_layers = self.layout.n_layers
        needs = [_layers_for_site(e.site, e.layer, n_layers) for e in self.captures]
        needs += [e.layer + 1 for e in (*self.metrics, *self.interventions)]
        needs += [_layers_for_site(e.effect.at_site, e.effect.at_layer, n_layers)
                  if e.metric == "cosine" else n_layers for e in self.effects]
        return max([0, *needs])


def _layers_for_site(site: str, layer: int | None, n_layers: int) -> int:
    """The leading layers a marker at `site` (of `layer`) needs built (`Plan.layers_needed`)."""
    if site == LENS_SITE or site in PER_HEAD_MODEL_SITES:
        return n_layers
    return 0 if layer is None else layer + 1


def _capture_entries(layout: HydraSplit, capture: ir.Capture) -> list[CaptureEntry]:
    mask = capture.aggregate.mask
    common = dict(site=capture.site, name=capture.key_name, mode=capture.aggregate.mode,
                  mask=None if mask is None else mask.kind,
                  field=None if mask is None else mask.field, span=capture.span)
    if capture.layers is None:
        # `final_norm` and `logits` exist per head, labelled with their head only when there
        # is a Hydra split (like layers inside the heads); `embed` sits before the trunk.
        per_head = capture.site in PER_HEAD_MODEL_SITES and layout.is_split
        heads = layout.selected_heads(capture.heads) if per_head else (None,)
        places = [(None, h) for h in heads]
    else:
        places = [(layer, h) for layer in capture.layers.resolve(layout.n_layers)
                  for h in layout.heads_of_layer(layer, capture.heads)]
    return [CaptureEntry(key=capture_key(capture.key_name, layer, head),
                         layer=layer, head=head, **common) for layer, head in places]


def _metric_entries(layout: HydraSplit, importance: ir.Importance) -> list[MetricEntry]:
    params = {p.name: p.value for p in importance.params}
    whole_layer = importance.module == LAYER_TARGET
    sites = METRICS[importance.metric].sites if whole_layer else ()
    entries = []
    for layer in importance.layers.resolve(layout.n_layers):
        for head in layout.heads_of_layer(layer, importance.heads):
            path = (layout.layer_path(layer, head) if whole_layer
                    else layout.module_path(importance.module, layer, head))
            entries.append(MetricEntry(
                key=importance_key(importance.metric, path),
                metric=importance.metric, module=importance.module, module_path=path,
                layer=layer, head=head, params=params, sites=sites, span=importance.span))
    return entries


def _intervention_entries(layout: HydraSplit,
                          intervention: ir.Intervention) -> list[InterventionEntry]:
    """One entry per (layer, head): the heads named by `of heads[...]` inside the heads (every
    head without a selector), the unsplit model's layer otherwise (head None)."""
    kind, target = intervention.target_kind, intervention.target
    entries = []
    for layer in intervention.layers.resolve(layout.n_layers):
        for head in layout.heads_of_layer(layer, intervention.heads):
            # The entry's key is its stored tensors' key less their field (`/channels`).
            key = intervention_key(target, layer, head, "channels").removesuffix("/channels")
            entries.append(InterventionEntry(
                key=key, kind=kind, target=target,
                site=target if kind == "site" else None,
                module_path=None if kind == "site" else layout.module_path(target, layer, head),
                layer=layer, head=head, intervention=intervention, span=intervention.span))
    return entries


def _effect_entries(layout: HydraSplit, effect: ir.Effect) -> list[EffectEntry]:
    """One entry per head: `of heads[...]`, else every head but the `vs` reference; one
    unlabelled entry without a split."""
    if not layout.is_split:
        heads: tuple[int | None, ...] = (None,)
    elif effect.heads is not None:
        heads = layout.selected_heads(effect.heads)
    else:
        heads = tuple(h for h in range(layout.n_heads) if h != effect.reference)
    return [EffectEntry(key=effect_key(effect.key_name, head), metric=effect.metric, head=head,
                        reference=effect.reference, effect=effect, span=effect.span)
            for head in heads]


def build_plan(experiment: ir.Experiment, *, n_layers: int) -> Plan:
    """The plan of a checked experiment on a model with `n_layers` layers (pure)."""
    layout = HydraSplit.of(experiment.hydra, n_layers=n_layers, interventions=experiment.interventions)
    captures = [e for c in experiment.captures if c.aggregate.mode != "none"
                for e in _capture_entries(layout, c)]
    metrics = [e for i in experiment.importances for e in _metric_entries(layout, i)]
    interventions = [e for i in experiment.interventions
                     for e in _intervention_entries(layout, i)]
    effects = [e for f in experiment.effects for e in _effect_entries(layout, f)]
    return Plan(layout=layout, captures=tuple(captures), metrics=tuple(metrics),
                interventions=tuple(interventions), effects=tuple(effects))
