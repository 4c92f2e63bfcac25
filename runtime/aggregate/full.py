"""`full`: keep every token, `[N, S_max, *F]` zero-padded, with the `[N, S_max]` mask beside it.

Tokens the mask does not select (padding, or all but the last for `mask = last`) are stored
as zeros, so the stored tensor does not depend on what a padded position happened to compute.
Positions follow each batch's layout (a left-padded batch keeps its padding on the left);
the `.mask` result says which positions are tokens. Each batch's rows go to host memory as
they come (`runtime/host_rows.py`); the results writer takes them a shard at a time.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.aggregate.base import Aggregator
from expc.runtime.aggregate.packing import padded_cat
from expc.runtime.host_rows import settle, to_host
from expc.runtime.token_sums import broadcast_rows
from expc.spec.vocabulary import DEFAULT_MASK


class FullAggregator(Aggregator):
    """Every selected token of every sample, batch chunks padded together at the end."""

    mode = "full"

    def __init__(self, *, mask: str = DEFAULT_MASK, field: str | None = None,
                 eager_checks: bool | None = None):
        super().__init__(mask=mask, field=field, eager_checks=eager_checks)
        self._values: list[torch.Tensor] = []  # each [B, S, *F], on the host
        self._masks: list[torch.Tensor] = []  # each [B, S] bool, on the host
        self._copying: torch.device | None = None  # a device still copying rows here

    def _add_selected(self, hidden: torch.Tensor, selected: torch.Tensor,
                      counts: torch.Tensor) -> torch.Tensor:
        keep = broadcast_rows(selected, hidden)  # [B, S, 1, ...]
        kept = torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype,
                                                     device=hidden.device))
        self._values.append(to_host(kept))
        self._masks.append(to_host(selected))
        if hidden.device.type == "cuda":
            self._copying = hidden.device
        return kept

    def _buffered_bytes(self) -> int:
        return sum(v.nbytes for v in self._values) + sum(m.nbytes for m in self._masks)

    def _packed(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        settle(self._copying)
        self._copying = None
        if len(self._values) > 1:
            self._values = [padded_cat(self._values)]
            self._masks = [padded_cat(self._masks)]
        return (self._values[0], self._masks[0]) if self._values else None

    def _result(self) -> dict[str, torch.Tensor]:
        packed = self._packed()
        return {} if packed is None else {"": packed[0], ".mask": packed[1]}

    def _state(self) -> dict[str, torch.Tensor]:
        packed = self._packed()
        return {} if packed is None else {"values": packed[0], "mask": packed[1]}

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        self._values = [state["values"]] if "values" in state else []
        self._masks = [state["mask"].bool()] if "mask" in state else []

    def _merge(self, other: Aggregator) -> None:
        assert isinstance(other, FullAggregator)
        packed = other._packed()
        if packed is not None:
            self._values.append(packed[0])
            self._masks.append(packed[1])
