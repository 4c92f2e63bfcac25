"""What every effect state shares: one float64 value per sample, in run order, exactly mergeable.

An effect is the state behind one `EffectEntry` (a `State`, `runtime/state_protocol.py`).
The compiler's effect tap calls its sink with the head's value and the reference's
(`kl`, `top1`, `cosine`) or the head's logits alone (`loss`, `logit_diff`); the sink adds the
batch's context (`runtime/sinks.BatchContext`: masks, token ids, each row's sample). Each
batch yields one float64 value per row, computed from that row alone, so splitting the
batches anywhere and merging (`merge`, resume, ranks) gives the same values bit for bit.
Values stay on the device in row blocks (`RowBlocks`, as the per-sample aggregators keep
theirs); a row that selects no token is a `SampleError` naming its sample, found without
stalling accelerators (`SampleCheck`), and each batch's values go to the `finite` watch, so a
NaN or inf fails the run at its sample (`runtime/nonfinite.py`). `result()` is
`{"": [N] float32}` in run order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from expc.runtime.aggregate.masks import select_tokens
from expc.runtime.aggregate.packing import RowBlocks
from expc.runtime.finite_watch import FiniteWatch
from expc.runtime.sample_error import SampleCheck
from expc.runtime.sinks import BatchContext
from expc.runtime.state_protocol import State
from expc.spec import ir
from expc.spec.vocabulary import DEFAULT_MASK

CHUNK_ELEMENTS = 1 << 24  # float64 temporaries of [positions, vocab] stay below 128 MiB


def mask_label(mask: ir.Mask | None) -> str:
    """The mask as the language writes it (`attention` when none is given)."""
    if mask is None:
        return DEFAULT_MASK
    return f'field("{mask.field}")' if mask.kind == "field" else mask.kind


def selected_tokens(mask: ir.Mask | None, context: BatchContext) -> torch.Tensor:
    """The `[B, S]` bool mask of the tokens `mask` selects in the current batch."""
    return select_tokens(DEFAULT_MASK if mask is None else mask.kind,
                         attention_mask=context.attention_mask,
                         field_mask=context.field_mask,
                         field=None if mask is None else mask.field)


def per_row_sums(values: torch.Tensor, selected: torch.Tensor,
                 per_token: Callable[..., torch.Tensor], *others: torch.Tensor) -> torch.Tensor:
    """`sum over the selected tokens of per_token(values[b, t], *others[b, t])` per row, `[B]`
    float64. Every position goes through (unselected ones, NaN padding included, are then
    dropped with `where`), in chunks so the `[positions, vocab]` float64 temporaries stay
    bounded; the chunks depend on shapes only, so no batch waits for the host."""
    batch, seq = selected.shape
    flat = [tensor.reshape(batch * seq, *tensor.shape[2:]) for tensor in (values, *others)]
    step = max(1, CHUNK_ELEMENTS // max(1, values[0, 0].numel()))
    per_position = torch.cat([per_token(*(tensor[start:start + step] for tensor in flat))
                              .to(torch.float64) for start in range(0, batch * seq, step)])
    return torch.where(selected.reshape(-1), per_position, 0.0).view(batch, seq).sum(dim=1)


class EffectState(State):
    """Base of the effect metrics; subclasses implement `values(*inputs, context)`."""

    metric = ""
    empty_message = "the mask selects no token of this sample"

    def __init__(self) -> None:
        self._rows = RowBlocks()  # [n] float64 so far, run order
        self._check = SampleCheck(message=self.empty_message, code="effect-empty")
        self.finite = FiniteWatch()
        self.batches = 0  # batches seen, merged and loaded ones included (`finite` counts so)

    def values(self, *inputs: torch.Tensor, context: BatchContext) -> torch.Tensor:
        """One batch's per-row values `[B]` float64."""
        raise NotImplementedError

    def add(self, *inputs: torch.Tensor, context: BatchContext) -> None:
        """Take one batch's tapped values (detached: state keeps no autograd graph)."""
        values = self.values(*(x.detach() for x in inputs), context=context)
        self.finite.observe(values, batch=self.batches, rows=True)
        self.batches += 1
        self._rows.append(values)

    def flag_empty(self, counts: torch.Tensor, context: BatchContext) -> None:
        """Report rows whose count of tokens is zero (now on CPU, at finalisation else)."""
        self._check.observe(counts == 0, context.sample_index.to(counts.device))

    def _packed(self) -> torch.Tensor:
        self._check.check()
        packed = self._rows.packed()
        return torch.zeros(0, dtype=torch.float64) if packed is None else packed

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self._packed(), "batches": torch.tensor(self.batches)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._check = SampleCheck(message=self.empty_message, code="effect-empty")
        self.finite.clear()
        self.batches = int(state["batches"])
        self._rows.replace(state["values"].to(torch.float64))

    def merge(self, other: State) -> None:
        """Fold `other` in as if its batches had come after this one's."""
        if type(other) is not type(self):
            raise ValueError(f"cannot merge a {type(other).__name__} into a "
                             f"{type(self).__name__}")
        mine, theirs = self._packed(), other._packed()
        self._rows.replace(torch.cat([mine, theirs.to(mine.device)]))
        self.batches += other.batches

    def result(self) -> dict[str, torch.Tensor]:
        return {"": self._packed().to(torch.float32)}
