"""Bind state objects to the compiler's taps, with the current batch's masks.

The compiler calls a capture sink as `sink(hidden)`, a metric sink as `sink(x_in, y_out)`
(a metric of whole layers as `sink(resid_in, resid_out)`, taken in the same two places) and an effect sink as `sink(head, reference)` or `sink(head_logits)`; the states also need
the batch's attention mask (and a per-token mask field), and effects and interventions its
token ids and each row's sample. `BatchContext` holds those for the batch being run, set by
the execution loop before each forward, so the graph itself stays free of runtime objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set

import attrs
import torch

from expc.runtime.aggregate.base import Aggregator
from expc.runtime.importance.base import ImportanceMetric
from expc.runtime.state_protocol import State


@attrs.define(kw_only=True)
class BatchContext:
    """The masks of the batch currently flowing through the instrumented graph, and what
    interventions and effects need of it (its token ids, each row's sample)."""

    attention_mask: torch.Tensor | None = None  # [B, S] 0/1
    field_mask: torch.Tensor | None = None  # [B, S] 0/1, from the data's mask field
    input_ids: torch.Tensor | None = None  # [B, S] int64 (loss: the next tokens)
    sample_index: torch.Tensor | None = None  # [B] int64, each row's sample in data order
    token_fields: Mapping[str, torch.Tensor] = {}  # name -> [B] int64, one token id per row

    def set(self, *, attention_mask: torch.Tensor, field_mask: torch.Tensor | None,
            input_ids: torch.Tensor | None = None,
            sample_index: torch.Tensor | None = None,
            token_fields: Mapping[str, torch.Tensor] | None = None) -> None:
        self.attention_mask = attention_mask
        self.field_mask = field_mask
        self.input_ids = input_ids
        self.sample_index = sample_index
        self.token_fields = token_fields or {}


def capture_sink(aggregator: Aggregator, context: BatchContext) -> Callable[[torch.Tensor], None]:
    """A tap callback feeding one aggregator with the current batch's masks."""

    def sink(hidden: torch.Tensor) -> None:
        aggregator.add(hidden, attention_mask=context.attention_mask,
                       field_mask=context.field_mask)

    return sink


def metric_sink(metric: ImportanceMetric,
                context: BatchContext) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """A tap callback feeding one importance metric its module's input and output (or its
    layer's `resid_in` and `resid_out`)."""

    def sink(x_in: torch.Tensor, y_out: torch.Tensor) -> None:
        metric.update(x_in, y_out, attention_mask=context.attention_mask)

    return sink


def effect_sink(state, context: BatchContext) -> Callable[..., None]:
    """A tap callback feeding one effect (`runtime/effects`): `sink(head, ref)` or
    `sink(head_logits)`, with the current batch's context."""

    def sink(*values: torch.Tensor) -> None:
        state.add(*values, context=context)

    return sink


def bind_sinks(states: Mapping[str, State], *, metric_keys: Set[str],
               effect_keys: Set[str] = frozenset(), context: BatchContext
               ) -> dict[str, Callable[..., None]]:
    """A sink for every state, by plan key: metric sinks for `metric_keys`, effect sinks for
    `effect_keys`, capture sinks else."""

    def bind(key: str, state: State) -> Callable[..., None]:
        if key in metric_keys:
            return metric_sink(state, context)
        return (effect_sink if key in effect_keys else capture_sink)(state, context)

    return {key: bind(key, state) for key, state in states.items()}
