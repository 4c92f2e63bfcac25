"""How many samples and batches a data file gives, counted without tokenising it.

`iterative_channel` needs one batch per pruning round; `expc check` counts the samples as
the run's reader does (non-blank lines, up to `limit`), streaming the file line by line,
and only when a spec asks for a metric that needs the count.
"""

from __future__ import annotations

import math


def count_samples(path: str, *, limit: int | None) -> int | None:
    """Non-blank lines of `path`, at most `limit`; None when the file cannot be read."""
    count = 0
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if limit is not None and count >= limit:
                    break
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if raw.decode("utf-8", "replace").strip():
                    count += 1
    except (OSError, ValueError):
        return None
    return count


def count_batches(samples: int, batch_size: int) -> int:
    return math.ceil(samples / batch_size)
