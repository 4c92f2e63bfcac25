"""The batches of a run, read and tokenised one window at a time as the run needs them.

A run never holds its whole dataset: `DataStream` reads `window * batch_size` samples (one
window; `data { window }`, default `vocabulary.DEFAULT_WINDOW` batches), tokenises them,
sorts them by length inside the window (`batches.plan_batches`, longest first, ties in data
order), cuts the window into batches and yields them, then reads the next window. Windows
start at fixed sample numbers (window `w` is samples `w * window * batch_size ...`), so the
batches are a pure function of the data and the spec: the same on every run, and the same
as one length sort of the whole data whenever it fits in one window. Memory is one window's
tokens plus the batch in flight, whatever the size of the data.

Before the first batch the samples are counted without tokenising (`spec/data_size.py`: a
line file is scanned for non-blank lines at disk speed, a table's row counts come from its
metadata), because the run needs the number of batches up front. With `torchrun`, rank `r`
of `n` runs the global batches `r, r + n, ...` and numbers them `0, 1, ...` (its cursor
counts those); every rank reads every window. A resumed run starts at its cursor's window:
the windows before it are skipped unread (line files: a blank-line scan, no JSON parsing or
tokenising; tables: whole row groups by their metadata), and only the batches of that window
before the cursor are tokenised again and dropped, at most `window - 1` batches of work.

A sample's number (`meta/sample_index`) counts the samples the source gives in order —
for line files the non-blank lines, so a blank line takes no number. When a problem names a
sample outside the window in hand (a non-finite value found a few batches later on an
accelerator), its window is read again to find its batch or its line: an error path only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import attrs
import torch

from expc.runtime.data.batches import Batch, BatchPlan, collate, plan_batches
from expc.runtime.data.load import TokenizedData, Tokenizer, tokenized_windows
from expc.runtime.data.sources import Origin
from expc.spec import ir
from expc.spec.data_size import count_batches, count_samples
from expc.spec.diagnostics import Diagnostic


@attrs.define(kw_only=True)
class DataStream:
    """One rank's batches of a data source, a window at a time (see the module docstring)."""

    n_samples: int  # samples the run reads (after `limit`), all ranks together
    batch_size: int
    window: int  # batches per window
    pad_token_id: int | None
    read: Callable[..., Iterator[TokenizedData]]  # (size=, start=) -> tokenised windows
    rank: int = 0
    world_size: int = 1
    _held: tuple[int, TokenizedData, BatchPlan] | None = None  # the window read last

    @classmethod
    def open(cls, source: ir.Source, *, batch_size: int, window: int, limit: int | None,
             tokenizer: Tokenizer | None, max_length: int | None, max_positions: int | None,
             vocab_size: int | None, token_fields: Sequence[str], pad_token_id: int | None,
             rank: int = 0, world_size: int = 1) -> DataStream:
        """Count the source's samples and get ready to read it; raises `DiagnosticError`
        for a missing or unreadable source."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        read = functools.partial(tokenized_windows, source, limit=limit, tokenizer=tokenizer,
                                 max_length=max_length, max_positions=max_positions,
                                 vocab_size=vocab_size, token_fields=tuple(token_fields))
        return cls(n_samples=count_samples(source, limit=limit), batch_size=batch_size,
                   window=window, pad_token_id=pad_token_id, read=read, rank=rank,
                   world_size=world_size)

    @property
    def total_batches(self) -> int:
        """Batches of every rank together."""
        return count_batches(self.n_samples, self.batch_size)

    def __len__(self) -> int:
        """This rank's batches."""
        return len(range(self.rank, self.total_batches, self.world_size))

    def _global(self, number: int) -> int:
        return self.rank + number * self.world_size

    def samples_before(self, number: int, *, rank: int | None = None) -> int:
        """How many samples the first `number` batches of this rank (or of `rank`) hold:
        every batch is full but the run's very last (a window holds whole batches)."""
        if number == 0:
            return 0
        rank = self.rank if rank is None else rank
        last_size = self.n_samples - (self.total_batches - 1) * self.batch_size
        short = rank + (number - 1) * self.world_size == self.total_batches - 1
        return number * self.batch_size - (self.batch_size - last_size if short else 0)

    def samples_of_rank(self, rank: int) -> int:
        """How many samples rank `rank` runs in all (its rows in the run's results)."""
        return self.samples_before(len(range(rank, self.total_batches, self.world_size)),
                                   rank=rank)

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """This rank's batches `start, start + 1, ...`, collated one at a time."""
        first = self._global(start)
        for window, data, plan in self._windows(first // self.window):
            for k in range(window * self.window, window * self.window + len(plan)):
                if k >= first and (k - self.rank) % self.world_size == 0:
                    yield collate(data, plan.batch(k - window * self.window),
                                  pad_token_id=self.pad_token_id,
                                  number=(k - self.rank) // self.world_size)

    def _windows(self, window: int) -> Iterator[tuple[int, TokenizedData, BatchPlan]]:
        """Windows `window, window + 1, ...`, tokenised and planned; the one in hand (the
        report's preview read the first) is not tokenised again."""
        span = self.window * self.batch_size
        if self._held is not None and self._held[0] == window:
            yield self._held
            window += 1
            if window * span >= self.n_samples:
                return
        for data in self.read(size=span, start=window * span):
            self._held = (window, data, plan_batches(data.lengths, batch_size=self.batch_size,
                                                     bucket_batches=self.window))
            yield self._held
            window += 1

    def _window(self, window: int) -> tuple[TokenizedData, BatchPlan]:
        """Window `window`, tokenised and planned: the one in hand, or read again."""
        if self._held is None or self._held[0] != window:
            span = self.window * self.batch_size
            data = next(self.read(size=span, start=window * span))
            self._held = (window, data, plan_batches(data.lengths, batch_size=self.batch_size,
                                                     bucket_batches=self.window))
        return self._held[1], self._held[2]

    def first_window(self) -> TokenizedData:
        """The first window's samples, tokenised (what the report previews)."""
        return self._window(0)[0]

    def batch(self, number: int) -> torch.Tensor:  # [B] int64
        """The sample numbers of this rank's batch `number`, in its row order."""
        k = self._global(number)
        data, plan = self._window(k // self.window)
        return plan.batch(k % self.window) + data.first

    def origin(self, sample: int) -> Origin:
        """Where sample number `sample` was read."""
        data, _ = self._window(sample // (self.window * self.batch_size))
        return data.origin(sample)

    def sample_error(self, sample: int, message: str, *, code: str) -> Diagnostic:
        """A diagnostic about sample number `sample`, at its line (or row) in the data."""
        return self.origin(sample).error(f"sample {sample}: {message}", code=code)
