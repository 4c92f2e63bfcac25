"""One state object per plan entry, and the result tensors they finish into.

The compiler's plan names every result key; here each capture entry gets an aggregator,
each metric entry an importance metric (given its module's weight and the model's KV-head
layout; a metric of whole layers needs neither) and each effect entry its effect, and at
the end their results become the contract's tensors, per-sample ones put back in data
order, each with the manifest description of docs/run-folder.md; the units every
intervention changed join them. Results that
the finish computes afresh from accumulators (a `dataset_mean`, every metric: small tensors)
are checked for NaN and inf here; per-sample results are the rows the batch loop already
checked (`runtime/nonfinite.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.compiler.plan import CaptureEntry, MetricEntry, Plan
from expc.runtime.aggregate.create import create_aggregator
from expc.runtime.allocator import release_freed_memory
from expc.runtime.data.batches import restore_data_order
from expc.runtime.effects.create import create_effect
from expc.runtime.effects.results import effect_results
from expc.runtime.importance.create import create_metric
from expc.runtime.intervene.results import intervention_results
from expc.runtime.intervene.units import Selection
from expc.runtime.nonfinite import HELP, describe
from expc.runtime.state_protocol import State
from expc.spec.diagnostics import fail
from expc.spec.run_format import (PER_SAMPLE_MODES, SAMPLE_INDEX, SUFFIX_MEANINGS, TOKEN_COUNT,
                                  importance_key, module_key)
from expc.spec.vocabulary import METRICS


def build_states(plan: Plan, model: torch.nn.Module, *, total_batches: int
                 ) -> dict[str, State]:
    """An aggregator, metric or effect for every plan key, in plan order."""
    config = model.config
    states: dict[str, State] = {}
    for entry in plan.captures:
        states[entry.key] = create_aggregator(mode=entry.mode, mask=entry.mask,
                                              field=entry.field)
    for entry in plan.metrics:  # a metric of whole layers reads no module's weight
        weight = None if entry.sites else getattr(model.get_submodule(entry.module_path),
                                                  "weight", None)
        try:
            states[entry.key] = create_metric(
                entry.metric, weight=None if weight is None else weight.detach(),
                params=entry.params, n_kv_heads=config.n_kv_heads, head_dim=config.head_dim,
                total_batches=total_batches)
        except ValueError as exc:
            raise fail(entry.span, f"{entry.metric} at {entry.module_path}: {exc}",
                       code="metric") from None
    for entry in plan.effects:
        states[entry.key] = create_effect(entry)
    return states


def token_field_names(plan: Plan) -> tuple[str, ...]:
    """The data fields the plan's effects read one token from (`logit_diff`), in order."""
    names = [name for entry in plan.effects if entry.metric == "logit_diff"
             for name in (entry.effect.correct, entry.effect.wrong)]
    return tuple(dict.fromkeys(names))


def _capture_meaning(entry: CaptureEntry) -> str:
    how = {"full": "every token of", "mean": "masked mean over the sequence of",
           "sum": "masked sum over the sequence of", "max": "masked max over the sequence of",
           "dataset_mean": "running mean over every selected token of the run of"}[entry.mode]
    where = "" if entry.layer is None else f" at layer {entry.layer}"
    head = "" if entry.head is None else f", head {entry.head}"
    mask = "" if entry.mask is None else f" (mask = {entry.field or entry.mask})"
    return f"{how} {entry.site}{where}{head}{mask}"


def _capture_description(entry: CaptureEntry, suffix: str) -> dict:
    """The manifest entry of one capture tensor (docs/run-folder.md)."""
    return {"kind": "capture", "meaning": _capture_meaning(entry) + SUFFIX_MEANINGS.get(suffix, suffix),
            "site": entry.site, "name": entry.name, "layer": entry.layer, "head": entry.head,
            "aggregate": entry.mode, "mask": entry.field or entry.mask}


def _metric_description(entry: MetricEntry, field: str) -> dict:
    """The manifest entry of one importance tensor (docs/run-folder.md)."""
    module = module_key(entry.module_path)
    where = f"{module} (the whole layer)" if entry.sites else module
    meaning = (f"{entry.metric} {field} of {where}: "
               f"{METRICS[entry.metric].field_meaning(field)}")
    return {"kind": "importance", "metric": entry.metric, "module": module,
            "layer": entry.layer, "head": entry.head, "field": field, "meaning": meaning}


def _finite_result(entry: CaptureEntry | MetricEntry, key: str,
                   tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, if it holds no NaN or inf; else the run's error, at the spec statement."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
        raise fail(entry.span, f"{describe(entry, key)} holds {nan} NaN and {inf} inf values "
                   "at the finish, though every batch added finite values (a NaN or inf in "
                   "the module's weight, or an overflow of the result's dtype)",
                   code="nonfinite", help=HELP)
    return tensor


def _stored_rows(entry: CaptureEntry, suffix: str, rows: torch.Tensor) -> torch.Tensor:
    """A per-sample capture's rows as the run folder stores them."""
    if entry.site == "attn_pattern" and entry.mode == "full" and suffix == "":
        return rows.permute(0, 2, 1, 3)  # [N, S_q, A, S_k] -> [N, A, S_q, S_k]
    return rows


def _streamed(plan: Plan) -> list[CaptureEntry]:
    """The captures whose rows the results writer takes as the run goes on."""
    return [entry for entry in plan.captures if entry.mode in PER_SAMPLE_MODES]


def buffered_bytes(plan: Plan, states: Mapping[str, State]) -> int:
    """Bytes of rows the streamed captures hold (from shapes: no device sync)."""
    return sum(states[entry.key].buffered_bytes for entry in _streamed(plan))


def take_rows(plan: Plan, states: Mapping[str, State]) -> dict[str, torch.Tensor]:
    """Every streamed capture's rows held so far, in run order and as stored
    (`runtime/results_writer.py`); the states let go of them."""
    rows = {}
    for entry in _streamed(plan):
        for suffix, tensor in states[entry.key].take_result().items():
            rows[entry.key + suffix] = _stored_rows(entry, suffix, tensor.detach().cpu()
                                                    ).contiguous()
    return rows


def streamed_descriptions(plan: Plan, keys) -> dict[str, dict]:
    """The manifest entries of the streamed keys among `keys` (their rows are in shards)."""
    found = {}
    for entry in _streamed(plan):
        for suffix in SUFFIX_MEANINGS:
            if entry.key + suffix in keys:
                found[entry.key + suffix] = _capture_description(entry, suffix)
    return found


def collect_results(plan: Plan, states: Mapping[str, State], *, sample_index: torch.Tensor,
                    token_count: torch.Tensor,
                    selections: Mapping[str, Selection] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Every result tensor (contract keys, CPU, data order) and its manifest description.

    `sample_index` `[N]` names each collected row's sample in run order; `token_count` `[N]`
    is given in data order; `selections` are the interventions' chosen units, by entry key.
    Each capture state hands its tensors over (and is empty after),
    and the memory its run-order rows held goes back to the OS before the next is taken, so
    the finish holds the results once, not once in the states and again in data order.
    """
    tensors: dict[str, torch.Tensor] = {}
    descriptions: dict[str, dict] = {}
    for entry in plan.captures:
        for suffix, tensor in states[entry.key].take_result().items():
            tensor = tensor.detach().cpu()
            if entry.mode in PER_SAMPLE_MODES:
                tensor = restore_data_order(_stored_rows(entry, suffix, tensor), sample_index)
            else:
                tensor = _finite_result(entry, entry.key + suffix, tensor)
            tensors[entry.key + suffix] = tensor.contiguous()
            descriptions[entry.key + suffix] = _capture_description(entry, suffix)
        release_freed_memory()  # the run-order rows are gone by now
    for entry in plan.metrics:
        for field, tensor in states[entry.key].take_result().items():
            key = importance_key(entry.metric, entry.module_path, field)
            tensors[key] = _finite_result(entry, key, tensor.detach().cpu().contiguous())
            descriptions[key] = _metric_description(entry, field)
    for found in (effect_results(plan.effects, states, sample_index=sample_index),
                  intervention_results(selections or {})):
        tensors.update(found[0])
        descriptions.update(found[1])
    tensors[SAMPLE_INDEX] = torch.arange(sample_index.numel(), dtype=torch.int64)
    tensors[TOKEN_COUNT] = token_count.to(torch.int64).contiguous()
    return tensors, descriptions
