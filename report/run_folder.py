"""Open a run folder (docs/run-folder.md) for reading: the manifest and the result tensors.

The report and `expc diff` read only this — never the model. A folder that is not a run, a
manifest that is not JSON or not of our format, or a results file that cannot be read is a
`Diagnostic` naming the file, not a traceback. A `running` or `failed` run may have no
results yet; it opens with no tensors so the report can still show what there is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError, safe_open

from expc.spec.diagnostics import DiagnosticError, error
from expc.spec.json_files import read_json_object

FORMAT = "expc-run/1"
STATUSES = ("running", "complete", "failed")
MANIFEST = "manifest.json"
RESULTS = "results.safetensors"
RUN_FOLDER_CODE = "report-run-folder"  # the diagnostic code of every run-folder error
CHUNK_ELEMENTS = 1 << 23  # values per slice when streaming a large tensor
OBJECT_FIELDS = ("spec", "ir", "model", "data", "versions", "timings", "tensors")
NULLABLE_OBJECT_FIELDS = ("error", "checkpoint")


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



def _manifest_error(path: Path, message: str, *, help: tuple[str, ...] = ()) -> DiagnosticError:
    return DiagnosticError(error(path, message, code=RUN_FOLDER_CODE, help=help))


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        raise _manifest_error(path, f"`{path.parent}` is not a run folder: it has no {MANIFEST}",
                              help=("give the folder `expc run` wrote (its `output.dir`)",))
    manifest = read_json_object(path, what=MANIFEST, code=RUN_FOLDER_CODE)
    if manifest.get("format") != FORMAT:
        raise _manifest_error(path, f"unknown run folder format {manifest.get('format')!r}",
                              help=(f"this expc reads `{FORMAT}`",))
    if manifest.get("status") not in STATUSES:
        raise _manifest_error(path, f"unknown run status {manifest.get('status')!r}",
                              help=("status is one of " + ", ".join(STATUSES),))
    for field in OBJECT_FIELDS:
        if not isinstance(manifest.get(field, {}), dict):
            raise _manifest_error(path, f"`{field}` in {MANIFEST} must be an object")
    for field in NULLABLE_OBJECT_FIELDS:
        if not isinstance(manifest.get(field) or {}, dict):
            raise _manifest_error(path, f"`{field}` in {MANIFEST} must be an object or null")
    return manifest


def _read_layout(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            layout = {}
            for key in handle.keys():
                view = handle.get_slice(key)
                layout[key] = (tuple(view.get_shape()), str(view.get_dtype()))
            return layout
    except (SafetensorError, OSError, ValueError) as exc:
        raise DiagnosticError(error(path, f"cannot read {RESULTS}: {exc}",
                                    code=RUN_FOLDER_CODE))


def open_run_folder(path: str | Path) -> RunFolder:
    """Read a run folder's manifest and results header; raise `DiagnosticError` if it is
    not a readable run. A complete run must have its results file."""
    folder = Path(path)
    if not folder.is_dir():
        raise _manifest_error(folder, f"run folder `{folder}` does not exist")
    manifest = _read_manifest(folder / MANIFEST)
    results = folder / RESULTS
    if not results.is_file():
        if manifest["status"] == "complete":
            raise _manifest_error(results, f"the run is complete but has no {RESULTS}")
        return RunFolder(path=folder, manifest=manifest, results_path=None, layout={})
    return RunFolder(path=folder, manifest=manifest, results_path=results,
                     layout=_read_layout(results))
