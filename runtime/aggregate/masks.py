"""Which tokens of a batch an aggregator reduces over, and the error when a row selects none.

Every aggregation mode reduces over the sequence (dim 1) of `[B, S, *F]` tensors, restricted to
the tokens a mask selects: `attention` (every non-padding token), `last` / `first` (the last /
first non-padding token, so left and right padding both work), or `field` (a per-token 0/1
list from the data, never counting padding). A row that selects nothing would silently turn
into NaN or zeros, so it is an `EmptyMaskError` naming the row instead. Checking a row needs
the host to read the device, so on an accelerator the check is deferred to the next
finalisation (result, state_dict, merge) instead of stalling every batch. The mask words
themselves are the language's (`expc.spec.vocabulary.MASKS`).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch

from expc.spec.vocabulary import DEFAULT_MASK, MASKS


class EmptyMaskError(ValueError):
    """A batch row whose mask selects no token; `row` is its index within the batch."""

    def __init__(self, row: int, *, batch: int | None = None, mask: str | None = None):
        self.row = row
        self.batch = batch
        self.mask = mask
        where = f"row {row}" if batch is None else f"row {row} of batch {batch}"
        super().__init__(f"{where} selects no token (mask = {mask or DEFAULT_MASK})")


def field_tensor(field_mask: torch.Tensor | Mapping[str, torch.Tensor] | None,
                 field: str | None) -> torch.Tensor:
    """The `[B, S]` mask of one data field, given the batch's field mask or all of them."""
    if isinstance(field_mask, Mapping):
        if field not in field_mask:
            raise ValueError(f"the batch has no mask field {field!r} "
                             f"(it has {sorted(field_mask)})")
        return field_mask[field]
    if field_mask is None:
        raise ValueError(f"mask = field({field!r}) needs a per-token mask field in the data, "
                         "and the batch has none")
    return field_mask


def select_tokens(kind: str, *, attention_mask: torch.Tensor,
                  field_mask: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
                  field: str | None = None) -> torch.Tensor:
    """The `[B, S]` bool mask of the tokens a mask kind selects (padding never selected)."""
    real = attention_mask.bool()  # [B, S]
    if kind == "attention":
        return real
    seq = real.shape[1]
    positions = torch.arange(seq, device=real.device)  # [S]
    if kind == "last":
        last = torch.where(real, positions, -1).amax(dim=1)  # [B], -1 for an empty row
        return positions == last[:, None]
    if kind == "first":
        first = torch.where(real, positions, seq).amin(dim=1)  # [B], S for an empty row
        return positions == first[:, None]
    if kind == "field":
        chosen = field_tensor(field_mask, field)  # [B, S]
        if chosen.shape != real.shape:
            raise ValueError(f"mask field {field!r} has shape {tuple(chosen.shape)}, "
                             f"the attention mask {tuple(real.shape)}")
        return real & chosen.to(device=real.device).bool()
    raise ValueError(f"unknown mask {kind!r}; expected one of {', '.join(MASKS)}")


def _raise_if_empty(counts: torch.Tensor, *, batch: int, mask: str) -> None:
    empty = (counts == 0).nonzero()
    if len(empty):
        raise EmptyMaskError(int(empty[0, 0]), batch=batch, mask=mask)


@attrs.define(kw_only=True)
class EmptyRowGuard:
    """Raises `EmptyMaskError` for rows selecting no token: at once on CPU, later elsewhere.

    `eager=None` decides by device (check at once on CPU, defer on accelerators so no batch
    waits for the host); `batches` numbers the batches seen, carried across resume and merge.
    """

    mask: str
    eager: bool | None = None
    batches: int = 0
    _pending: list[tuple[int, torch.Tensor]] = attrs.field(init=False, factory=list)

    def observe(self, counts: torch.Tensor) -> None:
        """Record one batch's selected-token counts per row (`[B]`)."""
        batch = self.batches
        self.batches += 1
        eager = counts.device.type == "cpu" if self.eager is None else self.eager
        if eager:
            _raise_if_empty(counts, batch=batch, mask=self.mask)
        else:
            self._pending.append((batch, counts))

    def check(self) -> None:
        """Raise for the first empty row among the batches not yet checked."""
        for batch, counts in self._pending:
            _raise_if_empty(counts, batch=batch, mask=self.mask)
        self._pending.clear()
