"""Which files a data source reads, and what its columnar files hold, without reading rows.

One home for the file layout of every source kind, so that `expc check` and the run's
reader agree on it: a line file (`jsonl`, `text`, `tokens`) is its path; `parquet(...)` is
every file its glob matches, in sorted order; `hf_dataset(...)` is the Arrow files of a
`datasets.save_to_disk` folder — a DatasetDict's split (`dataset_dict.json` lists the
splits, each a subfolder) or a single saved Dataset — in the order its `state.json` lists
them. Columnar files are opened with pyarrow, an optional dependency (the `parquet` and `hf`
extras); without it a table source is a diagnostic naming the extra, never an ImportError.
Only metadata is read here (a parquet footer, an Arrow stream's schema and batch headers,
memory-mapped), so counting the rows of a large dataset costs no decoding.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from types import ModuleType

import attrs

from expc.spec import ir
from expc.spec.diagnostics import Diagnostic, DiagnosticError, fail
from expc.spec.vocabulary import DEFAULT_SPLIT, TABLE_SOURCES

_EXTRAS = {"parquet": "parquet", "hf_dataset": "hf"}  # source kind -> its pip extra
_TEXT_TYPES = ("string", "large_string", "string_view")


@attrs.frozen(kw_only=True)
class TableFile:
    """One columnar file of a table source and how to open it."""

    path: str
    arrow_stream: bool  # an Arrow IPC stream (`save_to_disk`), else a parquet file


def pyarrow(source: ir.Source) -> ModuleType:
    """The pyarrow module, or a diagnostic at the source naming the extra to install."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401  (the submodule the readers use)
    except ImportError:
        extra = _EXTRAS[source.kind]
        raise fail(source.span, f"`{source.kind}(...)` reads its files with pyarrow, which is "
                   "not installed", code="data-dependency",
                   help=[f"pip install 'expc[{extra}]'"]) from None
    return pa


def table_files(source: ir.Source) -> tuple[TableFile, ...]:
    """The files of a `parquet` glob or an `hf_dataset` folder, in reading order."""
    if source.kind == "parquet":
        found = sorted(p for p in glob.glob(source.path, recursive=True) if os.path.isfile(p))
        if not found:
            raise fail(source.span, f"`{source.path}` matches no parquet file", code="data",
                       help=["paths in a spec resolve against the working directory; a glob "
                             "may use `*`, `?` and `**`"])
        return tuple(TableFile(path=p, arrow_stream=False) for p in found)
    return tuple(TableFile(path=p, arrow_stream=True) for p in _saved_dataset_files(source))


def _saved_dataset_files(source: ir.Source) -> list[str]:
    folder = Path(source.path)
    if not folder.is_dir():
        raise fail(source.span, f"dataset folder `{source.path}` does not exist", code="data",
                   help=["give the folder `datasets`' `save_to_disk` wrote"])
    listing = folder / "dataset_dict.json"
    if listing.is_file():
        splits = _json_field(listing, "splits", list)
        split = source.split or DEFAULT_SPLIT
        if split not in splits:
            raise fail(source.span, f"dataset `{source.path}` has no split `{split}`; it has "
                       f"{', '.join(f'`{s}`' for s in splits) or 'none'}", code="data-split",
                       help=[f'e.g. `split = "{splits[0]}"`'] if splits else [])
        folder = folder / split
    elif source.split is not None:
        recorded = _json_field(folder / "state.json", "_split", (str, type(None)))
        if recorded != source.split:
            raise fail(source.span, f"`{source.path}` holds one saved dataset, not a "
                       f"DatasetDict with a split `{source.split}`", code="data-split",
                       help=["leave out `split = ...` for a single saved Dataset"])
    entries = _json_field(folder / "state.json", "_data_files", list)
    names = [e.get("filename") if isinstance(e, dict) else None for e in entries]
    if not names or not all(isinstance(n, str) for n in names):
        raise fail(folder / "state.json", "`_data_files` lists no Arrow files", code="data")
    files = [str(folder / name) for name in names]
    for path in files:
        if not os.path.isfile(path):
            raise fail(path, "Arrow file listed in `state.json` does not exist", code="data")
    return files


def _json_field(path: Path, key: str, kind):
    """`key` of the JSON object in `path`, of type `kind`; else a diagnostic naming the file."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(path, f"cannot read this `save_to_disk` file: {exc}", code="data",
                   help=["give the folder `datasets`' `save_to_disk` wrote"]) from None
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, kind):
        raise fail(path, f"`{key}` is missing or of the wrong type", code="data")
    return value


def table_schema(source: ir.Source, file: TableFile):
    """The pyarrow schema of one table file; a damaged file is a diagnostic naming it."""
    pa = pyarrow(source)
    try:
        if file.arrow_stream:
            with pa.memory_map(file.path) as mapped:
                return pa.ipc.open_stream(mapped).schema
        return pa.parquet.read_schema(file.path)
    except (OSError, pa.ArrowException) as exc:
        raise damaged(file, exc) from None


def damaged(file: TableFile, exc: Exception):
    """The diagnostic for a table file pyarrow cannot read (truncated, not parquet/Arrow)."""
    kind = "Arrow stream" if file.arrow_stream else "parquet file"
    return fail(file.path, f"cannot read this {kind}: {exc}", code="data-file",
                help=["the file may be truncated or damaged; write it again"])


def check_fields(source: ir.Source, files: tuple[TableFile, ...],
                 token_fields: tuple[str, ...] = ()) -> None:
    """Every file has the text column (a string), the mask column and the token fields."""
    for file in files:
        schema = table_schema(source, file)
        wanted = [source.field, *([source.mask_field] if source.mask_field else []),
                  *token_fields]
        for name in wanted:
            if name not in schema.names:
                raise fail(source.span, f"`{file.path}` has no column `{name}`; its columns: "
                           f"{', '.join(f'`{n}`' for n in schema.names)}", code="data-field")
        kind = str(schema.field(source.field).type)
        if kind not in _TEXT_TYPES:
            raise fail(source.span, f"column `{source.field}` of `{file.path}` holds {kind}, "
                       "not text", code="data-field",
                       help=["`field = ...` names the column with each sample's text"])


def count_rows(source: ir.Source, files: tuple[TableFile, ...], *,
               limit: int | None = None) -> int:
    """Rows of the files together (at most `limit`), from metadata only."""
    pa = pyarrow(source)
    total = 0
    for file in files:
        if limit is not None and total >= limit:
            break
        try:
            if file.arrow_stream:
                with pa.memory_map(file.path) as mapped:
                    total += sum(batch.num_rows for batch in pa.ipc.open_stream(mapped))
            else:
                total += pa.parquet.ParquetFile(file.path).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise damaged(file, exc) from None
    return total if limit is None else min(total, limit)


def source_paths(source: ir.Source) -> tuple[str, ...]:
    """Every file a source reads, in reading order (what the run's fingerprint covers)."""
    if source.kind in TABLE_SOURCES:
        return tuple(file.path for file in table_files(source))
    return (source.path,)  # reading it names the file when it is gone


def check_source(source: ir.Source, *, token_fields: tuple[str, ...] = ()) -> list[Diagnostic]:
    """`expc check`'s look at the data: the files exist (a glob matches, a split is there)
    and a table's files have the columns the spec reads; no row is read."""
    try:
        if source.kind in TABLE_SOURCES:
            check_fields(source, table_files(source), token_fields)
        elif not os.path.isfile(source.path):
            raise fail(source.span, f"data file `{source.path}` does not exist", code="data",
                       help=["paths in a spec resolve against the working directory"])
    except DiagnosticError as exc:
        return list(exc.diagnostics)
    return []
