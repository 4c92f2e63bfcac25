"""The run folder as `expc run` writes it: manifest, results, checkpoint dir (`expc-run/1`).

`RunStore.start` claims a folder (a manifest with status `running`; which folders may be
used, and which of their files are expc's to remove, is `runtime/folder_claim.py`), `write_results` stores the result tensors and
describes each one for the manifest (`write_sharded_results` instead joins the shards every
rank wrote while running, `runtime/results_writer.py`, into the sharded layout), and
`finish` / `fail` rewrite the manifest last, so a `complete` manifest always sits beside its
results. Every file is written atomically
(`runtime/atomic.py`). `open_run` reads a folder back: its manifest checked by the
format's one reader (`spec/run_format.py`, which the report uses too) and its tensors read
lazily by the report's reader of both layouts (`report/results_reader.py`). The fields are those of `docs/run-folder.md`.
"""

from __future__ import annotations

import datetime
import math
import hashlib
import logging
import os
import platform
from collections.abc import Iterator, Mapping
from importlib.metadata import version
from pathlib import Path

import attrs
import torch

from expc.report.results_reader import SingleFile, Sharded, open_results
from expc.runtime.atomic import os_errors_named, write_json_atomic
from expc.runtime.atomic_tensors import save_safetensors_atomic
from expc.runtime.results_writer import dtype_name
from expc.runtime.fingerprint import ir_digest
from expc.runtime.folder_claim import claim_folder, clear_own_files
from expc.spec.diagnostics import DiagnosticError
from expc.spec.run_format import (CHECKPOINT_DIR, FILES_FIELD, FORMAT, MANIFEST, META_MEANINGS,
                                  OUTPUT_FILES, REQUIRED_FIELDS, RESULTS, RESULTS_FORMAT,
                                  RESULTS_INDEX, STORED_DTYPES, per_sample_key, piece_name,
                                  read_run_manifest, shard_name)

log = logging.getLogger(__name__)


def spec_sha256(text: str) -> str:
    """The fingerprint that ties a run folder to its spec text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@attrs.define(kw_only=True)
class RunStore:
    """Writes one run folder; create it with `RunStore.start`."""

    run_dir: Path
    manifest: dict
    resuming: bool = False  # the folder holds this spec's earlier run and --resume was asked
    _results_written: bool = False
    _partials: tuple[str, ...] = ()  # shards as written while running: removed at the finish

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / MANIFEST

    @property
    def results_path(self) -> Path:
        return self.run_dir / RESULTS

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    @classmethod
    def start(cls, run_dir: str | Path, *, spec_path: str, spec_text: str, ir: Mapping,
              model: Mapping, data_source: str, force: bool = False,
              resume: bool = False) -> RunStore:
        """Claim `run_dir` for a run of `spec_text` and write its `running` manifest.

        `runtime/folder_claim.py` decides whether the folder may be used (refusing with a
        `DiagnosticError` otherwise) and which files are the previous run's; those go
        after the new manifest is written, its checkpoint files unless `resume` continues
        the same experiment.
        """
        run_dir = Path(run_dir)
        sha, ir_sha = spec_sha256(spec_text), ir_digest(ir)
        resumed, claimed = claim_folder(run_dir, ir_sha=ir_sha, spec_sha=sha, force=force,
                                        resume=resume)
        manifest = {
            "format": FORMAT, "status": "running", "error": None,
            "spec": {"path": str(spec_path), "text": spec_text, "sha256": sha,
                     "ir_sha256": ir_sha},
            "ir": dict(ir), "model": dict(model),
            "data": {"source": data_source, "samples": 0, "tokens": 0, "batches": 0},
            "versions": {"expc": version("expc"), "torch": torch.__version__,
                         "python": platform.python_version()},
            "timings": {"started": _now(), "finished": None, "seconds": {},
                        "tokens_per_s": None, "samples_per_s": None},
            "checkpoint": None if resumed is None else resumed.get("checkpoint"),
            "tensors": {},
            FILES_FIELD: list(OUTPUT_FILES),
        }
        store = cls(run_dir=run_dir, manifest=manifest, resuming=resumed is not None)
        store._write_manifest()
        clear_own_files(run_dir, claimed, keep_checkpoint=store.resuming)
        return store

    def record_checkpoint(self, *, batches_done: int) -> None:
        """Note in the manifest that a checkpoint now covers `batches_done` batches."""
        self.manifest["checkpoint"] = {"dir": CHECKPOINT_DIR, "batches_done": batches_done}
        self._write_manifest()

    def write_results(self, tensors: Mapping[str, torch.Tensor],
                      descriptions: Mapping[str, Mapping]) -> None:
        """Store every result tensor and remember its manifest entry (written by `finish`).

        `descriptions[key]` holds `meaning`, `kind` and the kind's fields of
        docs/run-folder.md; shape and dtype are taken from the tensor. The `meta/` keys
        have a default description.
        """
        entries = {key: _describe(key, list(tensor.shape), dtype_name(tensor.dtype),
                                  descriptions.get(key)) for key, tensor in tensors.items()}
        save_safetensors_atomic(self.results_path, tensors)
        self.manifest["tensors"] = entries
        self._results_written = True

    def write_sharded_results(self, tensors: Mapping[str, torch.Tensor],
                              descriptions: Mapping[str, Mapping], *, shards: list[Mapping],
                              run_order: torch.Tensor, shard_size: int) -> None:
        """The sharded layout (docs/run-folder.md): `shards` (every rank's, rank order, as
        `ResultsWriter` recorded them) become `results-0000i-of-0000K.safetensors`, and
        `tensors` (the results not streamed, in data order) the last shard, per-sample ones
        put in run order (`run_order` `[N]`: each row's sample) like the streamed rows;
        the index goes last. The run's own shard files stay until `finish` (they are linked,
        not moved), so a crash before it leaves a resumable folder."""
        last, pieces = {}, []
        for key, tensor in tensors.items():
            per_sample = per_sample_key(key, descriptions.get(key) or {})
            if per_sample:
                tensor = tensor[run_order]
            name = piece_name(key, 0) if per_sample else key
            last[name] = tensor.contiguous()
            pieces.append({"key": key, "first": 0 if per_sample else None,
                           "rows": len(tensor) if per_sample else None,
                           "shape": list(tensor.shape), "dtype": dtype_name(tensor.dtype)})
        files = [shard["file"] for shard in shards]
        final = [shard_name(number, len(files) + 1) for number in range(1, len(files) + 2)]
        for old, new in zip(files, final):
            _link(self.run_dir / old, self.run_dir / new)
        save_safetensors_atomic(self.run_dir / final[-1], last)
        keys, total_size = _index_keys(
            [*zip(final, (shard["pieces"] for shard in shards)), (final[-1], pieces)],
            rows=run_order.numel())
        write_json_atomic(self.run_dir / RESULTS_INDEX, {
            "metadata": {"format": RESULTS_FORMAT, "total_size": total_size,
                         "shard_size": shard_size, "rows": run_order.numel(), "keys": keys},
            "weight_map": {piece["name"]: piece["file"] for entry in keys.values()
                           for piece in entry["pieces"]}})
        self.manifest["tensors"] = {
            key: _describe(key, keys[key]["shape"], _TORCH_NAMES[keys[key]["dtype"]],
                           descriptions.get(key)) for key in sorted(keys)}
        self._partials = tuple(files)
        self._results_written = True

    def finish(self, *, samples: int, tokens: int, batches: int,
               seconds: Mapping[str, float]) -> None:
        """Mark the run `complete`: results must be written already; the manifest goes last.

        `seconds` holds `load`, `compile`, `run` and `total`; throughput uses `run`.
        """
        if not self._results_written:
            raise RuntimeError("write_results must come before finish")
        self.manifest["data"].update(samples=samples, tokens=tokens, batches=batches)
        run_seconds = seconds.get("run") or 0.0
        self.manifest["timings"].update(
            finished=_now(), seconds=dict(seconds),
            tokens_per_s=tokens / run_seconds if run_seconds > 0 else None,
            samples_per_s=samples / run_seconds if run_seconds > 0 else None)
        self.manifest["status"] = "complete"
        self._write_manifest()
        for name in self._partials:  # the sharded layout's files are in place by now
            with os_errors_named(self.run_dir / name, doing="remove"):
                (self.run_dir / name).unlink(missing_ok=True)

    def fail(self, exc: BaseException) -> None:
        """Mark the run `failed`, keeping the error's message and diagnostics."""
        diagnostics = list(getattr(exc, "diagnostics", ()))
        message = str(exc) if diagnostics else f"{type(exc).__name__}: {exc}"
        self.manifest["error"] = {"message": message,
                                  "diagnostics": [d.to_json() for d in diagnostics]}
        self.manifest["timings"]["finished"] = _now()
        self.manifest["status"] = "failed"
        try:
            self._write_manifest()
        except DiagnosticError as unwritable:  # the error being reported matters more
            log.warning("could not mark the run failed: %s", unwritable)

    def _write_manifest(self) -> None:
        write_json_atomic(self.manifest_path, self.manifest)


_TORCH_NAMES = {stored: name for name, stored in STORED_DTYPES.items()}


def _link(source: Path, target: Path) -> None:
    """`target` names `source`'s bytes too (a hard link; a move where links are refused)."""
    with os_errors_named(target):
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            os.replace(source, target)


def _index_keys(files: list[tuple[str, list[Mapping]]], *, rows: int) -> tuple[dict, int]:
    """The index's `metadata.keys` from each file's piece records, and the stored bytes.

    A per-sample key's pieces (rows in run order) are zero-padded to the longest trailing
    dims when read, so its logical shape is `[rows, *longest]`."""
    keys: dict[str, dict] = {}
    total = 0
    for file, pieces in files:
        for piece in pieces:
            size = getattr(torch, piece["dtype"]).itemsize
            total += math.prod(piece["shape"]) * size
            entry = keys.setdefault(piece["key"], {
                "dtype": STORED_DTYPES[piece["dtype"]], "shape": list(piece["shape"]),
                "order": "whole" if piece["first"] is None else "run", "pieces": []})
            if piece["first"] is None:
                entry["pieces"].append({"file": file, "name": piece["key"], "rows": None})
                continue
            entry["shape"] = [rows, *map(max, zip(entry["shape"][1:], piece["shape"][1:]))]
            entry["pieces"].append({"file": file, "name": piece_name(piece["key"],
                                                                    piece["first"]),
                                    "rows": [piece["first"], piece["first"] + piece["rows"]]})
    for key, entry in keys.items():
        if entry["order"] == "run":
            entry["pieces"].sort(key=lambda p: p["rows"][0])
            bounds = [0, *(b for p in entry["pieces"] for b in p["rows"]), rows]
            if any(bounds[i] != bounds[i + 1] for i in range(0, len(bounds), 2)):
                raise RuntimeError(f"the shards' rows of {key!r} do not cover 0..{rows}")
    return keys, total


def _describe(key: str, shape: list[int], dtype: str, description: Mapping | None) -> dict:
    kind = key.split("/", 1)[0]
    if kind not in REQUIRED_FIELDS:
        raise ValueError(f"result key {key!r} must start with one of "
                         f"{', '.join(kind + '/' for kind in REQUIRED_FIELDS)}")
    if description is None and key in META_MEANINGS:
        description = {"kind": "meta", "meaning": META_MEANINGS[key]}
    if description is None:
        raise ValueError(f"result key {key!r} has no description for the manifest")
    missing = [f for f in ("meaning", "kind", *REQUIRED_FIELDS[kind]) if f not in description]
    if missing:
        raise ValueError(f"description of {key!r} lacks {', '.join(missing)}")
    if description["kind"] != kind:
        raise ValueError(f"description of {key!r} has kind {description['kind']!r}, not {kind!r}")
    return {"shape": list(shape), "dtype": dtype, **description}


@attrs.frozen(kw_only=True)
class LazyTensors(Mapping):
    """`{key: tensor}` over a run's results, in either layout; each tensor is read when
    first asked for, and kept when it came from one results file (a sharded run's are read
    again on each access: they are what does not fit in memory)."""

    results: SingleFile | Sharded | None  # None when the run wrote no results (yet)
    _loaded: dict = attrs.field(factory=dict, init=False)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self._loaded:
            return self._loaded[key]
        if self.results is None or key not in self.results.layout:
            raise KeyError(key)
        tensor = self.results.read(key)
        if isinstance(self.results, SingleFile):
            self._loaded[key] = tensor
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.results.layout) if self.results is not None else ())

    def __len__(self) -> int:
        return 0 if self.results is None else len(self.results.layout)


@attrs.frozen(kw_only=True)
class Run:
    """A run folder read back: its manifest, and its tensors loaded on first access."""

    path: Path
    manifest: Mapping
    tensors: LazyTensors  # one per run: a tensor of one results file is read from disk once

    @property
    def status(self) -> str:
        return self.manifest["status"]


def open_run(run_dir: str | Path) -> Run:
    """Read a run folder back (raises `DiagnosticError` naming the file if it is not one)."""
    manifest, results = read_run_manifest(run_dir)
    return Run(path=Path(run_dir), manifest=manifest,
               tensors=LazyTensors(results=open_results(results)))
