"""A problem with one sample found while a batch runs, named by its data-order index.

Interventions and effects know each batch row's sample (`BatchContext.sample_index`), so
unlike `EmptyMaskError` (a row of a numbered batch) they name the sample itself; the run
loop turns a `SampleError` into the data's diagnostic at that sample's line
(`TokenizedData.sample_error(exc.sample, exc.message, code=exc.code)`). Finding the bad row
needs the host to read the device: a `SampleCheck` looks at once on CPU and defers to its
next `check()` on accelerators (a state's finalisation), so no batch waits for the host.
"""

from __future__ import annotations

import attrs
import torch


class SampleError(ValueError):
    """Sample `sample` (data order) cannot be used; `message` says why, `code` classifies."""

    def __init__(self, sample: int, message: str, *, code: str):
        self.sample = sample
        self.message = message
        self.code = code
        super().__init__(f"sample {sample}: {message}")


@attrs.define(kw_only=True)
class SampleCheck:
    """Raises `SampleError` for the first flagged row: at once on CPU (or when `eager`),
    at the next `check()` elsewhere."""

    message: str
    code: str
    eager: bool | None = None
    _pending: list[tuple[torch.Tensor, torch.Tensor]] = attrs.field(init=False, factory=list)

    def observe(self, bad: torch.Tensor, sample_index: torch.Tensor) -> None:
        """Record one batch: `bad` `[B]` bool per row, `sample_index` `[B]` its samples."""
        eager = bad.device.type == "cpu" if self.eager is None else self.eager
        self._pending.append((bad, sample_index))
        if eager:
            self.check()

    def check(self) -> None:
        """Raise for the first flagged row among the batches not yet checked."""
        pending, self._pending = self._pending, []
        for bad, sample_index in pending:
            rows = bad.nonzero()
            if len(rows):
                raise SampleError(int(sample_index[int(rows[0, 0])]), self.message,
                                  code=self.code)
