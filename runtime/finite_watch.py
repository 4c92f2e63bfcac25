"""`FiniteWatch`: which batch (and row) first gave a state object a NaN or inf, found without
a host read per state.

A NaN weight or an overflowing activation must fail the run, not end in a `complete` folder
of NaN tensors. Every state object (`State.finite`) hands its watch, once per batch, exactly
what it adds to itself for that batch — a per-sample aggregator its `[B, *F]` rows (a `full`
capture its zero-padded `[B, S, *F]` tokens), a reduction over many samples its batch sums —
taken after padding is excluded, so a NaN that a padding position happens to hold never
counts, and no second pass over the activations is made. `observe` only queues device work:
one float64 sum per row (or one for the batch), which is finite exactly when every value in
it is — NaN and inf propagate through a sum, and a float64 sum of float32 or half-precision
values cannot overflow (float64 inputs could, beyond 1e300). One reduction per tensor is
about half the CPU cost of `isfinite(...).all()`, which is three kernels. `runtime/nonfinite.py`
reads the sums of every state with one host read per check and asks a watch for its
`first()` bad place only when the total is not finite.
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
    """Per-batch sums of one state's additions, still on their device (see the module)."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, bool, torch.Tensor]] = []  # (batch, rows, sums)

    def observe(self, added: torch.Tensor | Sequence[torch.Tensor], *, batch: int,
                rows: bool) -> None:
        """Queue the check of one batch's additions: with `rows`, each tensor is `[B, ...]`
        and is summed row by row (`[B]`); else each is summed whole (`[1]`)."""
        tensors = [added] if isinstance(added, torch.Tensor) else list(added)
        sums = [t.reshape(len(t), -1).sum(dim=1, dtype=torch.float64) if rows
                else t.sum(dtype=torch.float64).view(1) for t in tensors]
        self._pending.append((batch, rows, sums[0] if len(sums) == 1 else sum(sums)))

    def sums(self) -> list[torch.Tensor]:
        """The queued sums (finite exactly when what they sum is), one per observed batch."""
        return [sums for _, _, sums in self._pending]

    def first(self) -> NonFinite | None:
        """The first queued batch (and row) holding a non-finite value; reads the device."""
        for batch, rows, sums in self._pending:
            bad = (~torch.isfinite(sums)).nonzero()
            if len(bad):
                return NonFinite(batch=batch, row=int(bad[0, 0]) if rows else None)
        return None

    def clear(self) -> None:
        """Forget the queued sums (checked, or replaced by a loaded state)."""
        self._pending.clear()
