"""Read the rows of `parquet` files and saved Hugging Face datasets as raw samples.

A parquet file is read one row group at a time (`ParquetFile.read_row_group`, only the
columns the run uses), a `save_to_disk` Arrow file one record batch at a time from a memory
map, so what is held is one group's columns, never a file. Each row goes through the same
record check as a JSON line (`sources.parse_record`), so a null text or a bad mask is the
same diagnostic, at the file and row. Rows before `start` are skipped by the metadata's row
counts where a whole group lies before it (a resumed run pays no decoding for them). A file
pyarrow cannot read — truncated, not parquet — is a diagnostic naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from expc.runtime.data.sources import MAX_ERRORS, Origin, RawSample, parse_record
from expc.spec import ir
from expc.spec.data_files import TableFile, check_fields, damaged, pyarrow, table_files
from expc.spec.diagnostics import Diagnostic, DiagnosticError, fail


def read_table_samples(source: ir.Source, *, limit: int | None = None,
                       token_fields: Sequence[str] = (), start: int = 0
                       ) -> Iterator[RawSample]:
    """Yield the rows of a table source in file order; like `sources.read_samples`, bad
    rows (up to `MAX_ERRORS`) are raised together as a `DiagnosticError`."""
    pa = pyarrow(source)
    files = table_files(source)
    check_fields(source, files, tuple(token_fields))
    columns = list(dict.fromkeys(
        [source.field, *([source.mask_field] if source.mask_field else []), *token_fields]))
    problems: list[Diagnostic] = []
    number = 0  # the next row's sample number
    for file in files:
        try:
            row = 0  # the next row's number within the file
            for rows, read in _groups(pa, file, columns):
                if limit is not None and number >= limit:
                    break
                if number + rows <= start:
                    number, row = number + rows, row + rows  # skipped unread
                    continue
                for record in read().to_pylist():
                    number, row = number + 1, row + 1
                    if number <= start or (limit is not None and number > limit):
                        continue
                    sample = parse_record(record, text=None, kind=source.kind,
                                          origin=Origin(path=file.path, row=row - 1),
                                          field=source.field, mask_field=source.mask_field,
                                          token_fields=token_fields, problems=problems)
                    if len(problems) >= MAX_ERRORS:
                        raise DiagnosticError(problems)
                    if sample is not None and not problems:
                        yield sample
        except (OSError, pa.ArrowException) as exc:
            raise damaged(file, exc) from None
        if limit is not None and number >= limit:
            break
    if problems:
        raise DiagnosticError(problems)
    if number == 0:
        raise fail(source.span, f"`{source.path}` holds no rows", code="data-empty")


def _groups(pa, file: TableFile, columns: list[str]) -> Iterator[tuple[int, Callable]]:
    """(rows, a function reading the columns) of each row group or record batch, in order;
    nothing is decoded until the function is called."""
    if file.arrow_stream:
        with pa.memory_map(file.path) as mapped:
            for batch in pa.ipc.open_stream(mapped):
                yield batch.num_rows, lambda batch=batch: batch.select(columns)
        return
    parquet = pa.parquet.ParquetFile(file.path)
    for group in range(parquet.num_row_groups):
        yield (parquet.metadata.row_group(group).num_rows,
               lambda group=group: parquet.read_row_group(group, columns=columns))
