"""Open a run folder (docs/run-folder.md) for reading: the manifest and the result tensors.

The report and `expc diff` read only this — never the model. A folder that is not a run, a
manifest that is not JSON or not of our format (checked by `spec/run_format.py`, the
format's one reader), or a results file that cannot be read is a `Diagnostic` naming the
file, not a traceback. A `running` or `failed` run may have no results yet; it opens with
no tensors so the report can still show what there is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError, safe_open

from expc.spec.diagnostics import fail
from expc.spec.run_format import RESULTS, RUN_FOLDER_CODE, read_run_manifest

CHUNK_ELEMENTS = 1 << 23  # values per slice when streaming a large tensor


@attrs.frozen(kw_only=True)
class RunFolder:
    """A run folder's manifest and the keys of its results (tensors are read on demand)."""

    path: Path
    manifest: Mapping
    results_path: Path | None  # None when the run wrote no results (yet)
    layout: Mapping[str, tuple[tuple[int, ...], str]]  # key -> (shape, dtype), from the header

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
        """One result tensor as stored."""
        with safe_open(str(self.results_path), framework="pt") as handle:
            return handle.get_tensor(key)

    def rows_per_chunk(self, key: str) -> int:
        """How many dim-0 rows of `key` make a slice of about CHUNK_ELEMENTS values."""
        shape, _ = self.layout[key]
        return max(1, CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))

    def chunks(self, key: str, rows: int) -> Iterator[torch.Tensor]:
        """The tensor in slices of `rows` along dim 0, so a large `full` capture is never
        held whole."""
        shape, _ = self.layout[key]
        if not shape:  # a scalar is one slice
            yield self.tensor(key)
            return
        with safe_open(str(self.results_path), framework="pt") as handle:
            view = handle.get_slice(key)
            for start in range(0, shape[0], rows):
                yield view[start:start + rows]

    def tensors(self, keys) -> dict[str, torch.Tensor]:
        """Several result tensors with one open of the file."""
        keys = list(keys)
        if not keys:
            return {}
        with safe_open(str(self.results_path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in keys}


def _read_layout(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            layout = {}
            for key in handle.keys():
                view = handle.get_slice(key)
                layout[key] = (tuple(view.get_shape()), str(view.get_dtype()))
            return layout
    except (SafetensorError, OSError, ValueError) as exc:
        raise fail(path, f"cannot read {RESULTS}: {exc}", code=RUN_FOLDER_CODE) from None


def open_run_folder(path: str | Path) -> RunFolder:
    """Read a run folder's manifest and results header; raise `DiagnosticError` if it is
    not a readable run. A complete run must have its results file."""
    manifest, results = read_run_manifest(path)
    return RunFolder(path=Path(path), manifest=manifest, results_path=results,
                     layout={} if results is None else _read_layout(results))
