"""Open a run folder (docs/run-folder.md) for reading: the manifest and the result tensors.

The report and `expc diff` read only this — never the model. A folder that is not a run, a
manifest that is not JSON or not of our format (checked by `spec/run_format.py`, the
format's one reader), or a results file that cannot be read is a `Diagnostic` naming the
file, not a traceback. A `running` or `failed` run may have no results yet; it opens with
no tensors so the report can still show what there is. Results in one file or in shards
read the same (`report/results_reader.py`): opening reads headers only, and `chunks` reads
a slice at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import torch

from expc.report.results_reader import SingleFile, Sharded, open_results, row_count
from expc.spec.run_format import read_run_manifest

CHUNK_ELEMENTS = 1 << 20  # values per slice: its float64 temporaries stay near 8 MiB each


@attrs.frozen(kw_only=True)
class RunFolder:
    """A run folder's manifest and the keys of its results (tensors are read on demand)."""

    path: Path
    manifest: Mapping
    results: SingleFile | Sharded | None

    @property
    def layout(self) -> Mapping[str, tuple[tuple[int, ...], str]]:
        """key -> (shape, dtype as safetensors names it), from the header or the index."""
        return {} if self.results is None else self.results.layout

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted(self.layout))

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def title(self) -> str:
        """The experiment's name from the IR, else the folder's name."""
        name = self.manifest.get("ir", {}).get("name")
        return name if isinstance(name, str) and name else self.path.resolve().name

    def entry(self, key: str) -> Mapping:
        """The manifest's description of a key (empty when the manifest has none)."""
        return self.manifest.get("tensors", {}).get(key, {})

    def tensor(self, key: str) -> torch.Tensor:
        """One result tensor (rows in data order)."""
        return self.results.read(key)

    def rows_per_chunk(self, key: str) -> int:
        """How many dim-0 rows of `key` make a slice of about CHUNK_ELEMENTS values."""
        return row_count(self.layout, key, CHUNK_ELEMENTS)

    def chunks(self, key: str, rows: int) -> Iterator[torch.Tensor]:
        """The tensor in slices of `rows` along dim 0 (data order), so a large `full`
        capture is never held whole."""
        shape, _ = self.layout[key]
        if not shape:  # a scalar is one slice
            yield self.tensor(key)
            return
        for start in range(0, shape[0], rows):
            yield self.results.rows(key, start, min(start + rows, shape[0]))

    def tensors(self, keys) -> dict[str, torch.Tensor]:
        """Several result tensors (one open of the file when there is one)."""
        keys = list(keys)
        return self.results.read_many(keys) if keys else {}


def open_run_folder(path: str | Path) -> RunFolder:
    """Read a run folder's manifest and results header (or index); raise `DiagnosticError`
    if it is not a readable run. A complete run must have its results."""
    manifest, results = read_run_manifest(path)
    return RunFolder(path=Path(path), manifest=manifest, results=open_results(results))
