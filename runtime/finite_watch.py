"""`FiniteWatch`: which batch (and row) first gave a state object a NaN or inf, found without
a host read per state.

A NaN weight or an overflowing activation must fail the run, not end in a `complete` folder
of NaN tensors. Every state object (`State.finite`) hands its watch, once per batch, exactly
what it adds to itself for that batch — a per-sample aggregator its `[B, *F]` rows (a `full`
capture its zero-padded `[B, S, *F]` tokens), a reduction over many samples its batch sums —
taken after padding is excluded, so a NaN that a padding position happens to hold never
counts, and no second pass over the activations is made. `observe` only queues device work
(one flag per row, or one for the batch); `runtime/nonfinite.py` reads the flags of every
state in one host read per check and asks a watch for its `first()` bad place only when
some flag is down.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch


@attrs.frozen(kw_only=True)
class NonFinite:
    """Where a state first took in a non-finite value: its batch number (counted as the state
    counts batches, across resume) and the row within that batch, or None when the values
    were a reduction over the whole batch."""

    batch: int
    row: int | None = None


class FiniteWatch:
    """Per-batch finiteness flags of one state's additions, still on their device."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, bool, torch.Tensor]] = []  # (batch, rows, ok flags)

    def observe(self, added: torch.Tensor | Sequence[torch.Tensor], *, batch: int,
                rows: bool) -> None:
        """Queue the check of one batch's additions: with `rows`, each tensor is `[B, ...]`
        and is flagged row by row; else each is flagged as a whole."""
        tensors = [added] if isinstance(added, torch.Tensor) else list(added)
        flags = [torch.isfinite(t).reshape(len(t), -1).all(dim=1) if rows
                 else torch.isfinite(t).all()[None] for t in tensors]
        ok = flags[0]
        for more in flags[1:]:
            ok = ok & more
        self._pending.append((batch, rows, ok))

    def flags(self) -> list[torch.Tensor]:
        """The queued flags (True: finite), one tensor per observed batch."""
        return [ok for _, _, ok in self._pending]

    def first(self) -> NonFinite | None:
        """The first queued batch (and row) holding a non-finite value; reads the device."""
        for batch, rows, ok in self._pending:
            bad = (~ok).nonzero()
            if len(bad):
                return NonFinite(batch=batch, row=int(bad[0, 0]) if rows else None)
        return None

    def clear(self) -> None:
        """Forget the queued flags (checked, or replaced by a loaded state)."""
        self._pending.clear()
