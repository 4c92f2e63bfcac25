"""Progress of a run: a tqdm bar with samples/s and tokens/s on a TTY, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("expc.run")

LOG_EVERY_SECONDS = 10.0


class Progress:
    """Counts batches, samples and tokens; quiet shows nothing."""

    def __init__(self, *, total: int, done: int = 0, quiet: bool = False) -> None:
        self.total, self.done, self.quiet = total, done, quiet
        self.samples = self.tokens = 0
        self._start = self._last_log = time.perf_counter()
        self._bar = None
        if not quiet and sys.stderr.isatty():
            self._bar = tqdm(total=total, initial=done, unit="batch", dynamic_ncols=True,
                             file=sys.stderr)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()

    def advance(self, *, samples: int, tokens: int) -> None:
        self.done += 1
        self.samples += samples
        self.tokens += tokens
        now = time.perf_counter()
        rate = max(now - self._start, 1e-9)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.samples / rate:.1f} samples/s, "
                                      f"{self.tokens / rate:.0f} tok/s", refresh=False)
            self._bar.update(1)
        elif not self.quiet and (now - self._last_log >= LOG_EVERY_SECONDS
                                 or self.done == self.total):
            self._last_log = now
            log.info("batch %d/%d, %.1f samples/s, %.0f tokens/s", self.done, self.total,
                     self.samples / rate, self.tokens / rate)
