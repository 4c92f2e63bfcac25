"""A source's raw samples, whatever its kind: the one place that picks the reader.

Line files (`jsonl`, `text`, `tokens`) are read by `sources.read_samples`, tables
(`parquet`, `hf_dataset`) a row group at a time by `tables.read_table_samples`. The run's
tokeniser (`load.tokenized_windows`) and the result plan (`runtime/result_plan.py`, which
must stay torch-free) both read through here, and tokenise by `sample_tokens`, so they can
never count different samples or tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from expc.runtime.data.sources import RawSample, read_samples
from expc.runtime.data.tables import read_table_samples
from expc.spec import ir
from expc.spec.vocabulary import TABLE_SOURCES


def sample_tokens(raw: RawSample, tokenizer, max_length: int) -> list[int]:
    """A sample's tokens before the cut to `max_length`: its ids as given, the whole text's
    tokens when a mask field is cut alongside them, else the text encoded up to `max_length`.
    The run's packer and the result plan both count tokens by this rule."""
    if raw.token_ids is not None:
        return raw.token_ids
    if raw.mask is not None:  # a mask field is cut after tokenising the whole text
        return tokenizer.encode(raw.text)
    return tokenizer.encode(raw.text, max_length=max_length)


def source_samples(source: ir.Source, *, limit: int | None = None,
                   token_fields: Sequence[str] = (), start: int = 0) -> Iterator[RawSample]:
    """The samples of `source` from number `start` on, at most `limit` counted from 0."""
    if source.kind in TABLE_SOURCES:
        return read_table_samples(source, limit=limit, token_fields=tuple(token_fields),
                                  start=start)
    return read_samples(kind=source.kind, path=source.path, field=source.field,
                        mask_field=source.mask_field, limit=limit,
                        token_fields=tuple(token_fields), start=start)
