"""What every aggregator shares: token selection, the empty-row check, batch numbering.

An aggregator is the state behind one capture (a `State`, `runtime/state_protocol.py`): the
runtime hands it each batch's `[B, S, *F]` tensor (dim 1 the sequence) with the batch's masks
(`add`), and at the end asks for `take_result()`. Its `merge(other)` is exact and
associative. Results are `{suffix: tensor}` dicts: `""` is the main tensor, `.mask`, `.var`,
`.count` sit beside it. What a batch adds (its rows, or its sums) goes to the state's
`finite` watch, so that a NaN or inf fails the run at that batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.aggregate.masks import EmptyRowGuard, select_tokens
from expc.runtime.finite_watch import FiniteWatch
from expc.runtime.state_protocol import State
from expc.spec.vocabulary import DEFAULT_MASK, MASKS


class Aggregator(State):
    """Base of every aggregation mode; subclasses implement the `_`-prefixed hooks."""

    mode = ""
    rows = True  # what a batch adds is one row per sample (False: one reduction of the batch)

    def __init__(self, *, mask: str = DEFAULT_MASK, field: str | None = None,
                 eager_checks: bool | None = None):
        if mask not in MASKS:
            raise ValueError(f"unknown mask {mask!r}; expected one of {', '.join(MASKS)}")
        if (mask == "field") != (field is not None):
            raise ValueError("a field name goes with mask = field, and only with it")
        self.mask = mask
        self.field = field
        self._eager_checks = eager_checks
        self._guard = EmptyRowGuard(mask=self.mask_label, eager=eager_checks)
        self.finite = FiniteWatch()

    @property
    def mask_label(self) -> str:
        """The mask as the language writes it: `attention`, `last`, `field("name")`."""
        return f'field("{self.field}")' if self.mask == "field" else self.mask

    @property
    def batches(self) -> int:
        """How many batches this state has seen (including merged and loaded ones)."""
        return self._guard.batches

    def add(self, hidden: torch.Tensor, *, attention_mask: torch.Tensor,
            field_mask: torch.Tensor | Mapping[str, torch.Tensor] | None = None) -> None:
        """Take one batch: `hidden` `[B, S, *F]`, `attention_mask` `[B, S]` 0/1."""
        if hidden.dim() < 2 or tuple(hidden.shape[:2]) != tuple(attention_mask.shape):
            raise ValueError(f"hidden {tuple(hidden.shape)} does not start with the "
                             f"attention mask's [B, S] = {tuple(attention_mask.shape)}")
        hidden = hidden.detach()  # state never keeps an autograd graph alive
        selected = select_tokens(self.mask, attention_mask=attention_mask.to(hidden.device),
                                 field_mask=field_mask, field=self.field)  # [B, S]
        counts = selected.sum(dim=1)  # [B]
        batch = self.batches
        self._guard.observe(counts)
        self.finite.observe(self._add_selected(hidden, selected, counts), batch=batch,
                            rows=self.rows)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of rows held for the results writer (`runtime/results_writer.py`), read
        from shapes alone (no device sync); 0 for a mode that keeps no rows."""
        return self._buffered_bytes() if self.rows else 0

    def result(self) -> dict[str, torch.Tensor]:
        """The finished tensors by suffix; `{}` when nothing was collected."""
        self._guard.check()
        return self._result()

    def take_result(self) -> dict[str, torch.Tensor]:
        """`result()`, after which this state holds nothing: handing the tensors over instead
        of copying them keeps a run's results in memory once at its finish."""
        found = self.result()
        self._load({})
        return found

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._guard.check()
        return {**self._state(), "batches": torch.tensor(self.batches)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._guard = EmptyRowGuard(mask=self.mask_label, eager=self._eager_checks,
                                    batches=int(state["batches"]))
        self.finite.clear()
        self._load({key: value for key, value in state.items() if key != "batches"})

    def merge(self, other: Aggregator) -> None:
        """Fold `other` into this state as if its batches had come after this one's."""
        if (type(other), other.mode, other.mask_label) != (type(self), self.mode,
                                                           self.mask_label):
            raise ValueError(f"cannot merge a {other.mode} aggregator with mask "
                             f"{other.mask_label} into a {self.mode} one with mask "
                             f"{self.mask_label}")
        self._guard.check()
        other._guard.check()
        self._guard.batches += other.batches
        self._merge(other)

    # Hooks for the modes.
    def _add_selected(self, hidden: torch.Tensor, selected: torch.Tensor,
                      counts: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Take the batch's selected tokens; return what was added (for `finite`)."""
        raise NotImplementedError

    def _buffered_bytes(self) -> int:
        raise NotImplementedError

    def _result(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def _merge(self, other: Aggregator) -> None:
        raise NotImplementedError

