"""A source's raw samples, whatever its kind: the one place that picks the reader.

Line files (`jsonl`, `text`, `tokens`) are read by `sources.read_samples`, tables
(`parquet`, `hf_dataset`) a row group at a time by `tables.read_table_samples`. The run's
tokeniser (`load.tokenized_windows`) and the result plan (`runtime/result_plan.py`, which
must stay torch-free) both read through here, so they can never count different samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from expc.runtime.data.sources import RawSample, read_samples
from expc.runtime.data.tables import read_table_samples
from expc.spec import ir
from expc.spec.vocabulary import TABLE_SOURCES


def source_samples(source: ir.Source, *, limit: int | None = None,
                   token_fields: Sequence[str] = (), start: int = 0) -> Iterator[RawSample]:
    """The samples of `source` from number `start` on, at most `limit` counted from 0."""
    if source.kind in TABLE_SOURCES:
        return read_table_samples(source, limit=limit, token_fields=tuple(token_fields),
                                  start=start)
    return read_samples(kind=source.kind, path=source.path, field=source.field,
                        mask_field=source.mask_field, limit=limit,
                        token_fields=tuple(token_fields), start=start)
