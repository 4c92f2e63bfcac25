"""How many samples and batches a data source gives, counted without tokenising it.

The run needs the count before its first batch (the progress bar, the resume cursor's
checks, `iterative_channel`'s one batch per pruning round) and `expc check` needs it for
`iterative_channel`. A line file is counted as the run's reader counts it (non-blank lines,
up to `limit`), streaming its bytes once at disk speed without parsing them; a table source
sums its files' row counts from their metadata (`spec/data_files.py`).
"""

from __future__ import annotations

import math

from expc.spec import ir
from expc.spec.data_files import count_rows, table_files
from expc.spec.diagnostics import fail
from expc.spec.vocabulary import TABLE_SOURCES


BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark a line file's first line may start with


def strip_bom(raw: bytes, line: int) -> bytes:
    """A line file's line `line` (1-based) without a leading byte-order mark."""
    return raw[len(BOM):] if line == 1 and raw.startswith(BOM) else raw


def is_sample_line(raw: bytes, line: int) -> bool:
    """Whether line `line` of a line file is a sample: the one blankness rule of the run's
    reader (`runtime/data/sources.py`), this counter and the reader's skipping of earlier
    samples. Blank is any Unicode whitespace; a line that is not valid UTF-8 is a sample
    (the reader reports it)."""
    return bool(strip_bom(raw, line).decode("utf-8", "replace").strip())


def count_samples(source: ir.Source, *, limit: int | None) -> int:
    """Samples of `source`, at most `limit`; a diagnostic when its files cannot be read."""
    if source.kind in TABLE_SOURCES:
        return count_rows(source, table_files(source), limit=limit)
    path = source.path
    count = 0
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if limit is not None and count >= limit:
                    break
                count += is_sample_line(raw, number)
    except OSError as exc:
        raise fail(path, f"cannot read data file: {exc.strerror or exc}",
                   code="data-file") from None
    return count


def count_batches(samples: int, batch_size: int) -> int:
    return math.ceil(samples / batch_size)
