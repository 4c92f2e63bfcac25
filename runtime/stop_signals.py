"""Ctrl-C and SIGTERM during a run: stop cleanly, never leave the manifest `running`.

Inside the batch loop a signal only sets a flag that the loop reads between batches, so a
batch is never half-counted and the loop can save a checkpoint before it stops. Anywhere
else (loading, compiling, writing results) the signal raises `Interrupted` at once; either
way the run's `except` marks the manifest `failed` with the message, and `--resume` picks
up from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A signal stopped the run; `--resume` continues from its last checkpoint."""

    def __init__(self, *, signal_name: str, run_dir: Path | None = None,
                 batches_done: int | None = None):
        self.signal_name = signal_name
        self.run_dir = run_dir
        self.batches_done = batches_done
        if batches_done is None:
            message = f"stopped by {signal_name} before the batch loop"
        else:
            message = (f"stopped by {signal_name} after {batches_done} batches; checkpoint "
                       f"saved in {run_dir}")
        super().__init__(message)


class StopSignals:
    """Handles SIGINT and SIGTERM while entered (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.received: str | None = None  # the signal the loop has yet to act on
        self._deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        try:
            for number in HANDLED:
                self._previous[number] = signal.signal(number, self._handle)
        except ValueError:  # not the main thread: signals behave as usual
            self._restore()
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._deferring:
            self.received = name
        else:
            raise Interrupted(signal_name=name)

    def raise_pending(self) -> None:
        """Act on a signal that arrived while deferred, outside the batch loop."""
        if self.received is not None:
            raise Interrupted(signal_name=self.received)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[StopSignals]:
        """While in the body, signals wait for the loop to read `received`."""
        self._deferring = True
        try:
            yield self
        finally:
            self._deferring = False
