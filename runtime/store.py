"""The run folder as `expc run` writes it: manifest, results, checkpoint dir (`expc-run/1`).

`RunStore.start` claims a folder (a manifest with status `running`; which folders may be
used, and which of their files are expc's to remove, is `runtime/folder_claim.py`), `write_results` stores the result tensors and
describes each one for the manifest, and `finish` / `fail` rewrite the manifest last, so a
`complete` manifest always sits beside its results. Every file is written atomically
(`runtime/atomic.py`). `open_run` reads a folder back: its manifest checked by the
format's one reader (`spec/run_format.py`, which the report uses too) and its tensors read
lazily. The fields are those of `docs/run-folder.md`.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import platform
from collections.abc import Iterator, Mapping
from importlib.metadata import version
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError, safe_open

from expc.runtime.atomic import save_safetensors_atomic, write_json_atomic
from expc.runtime.fingerprint import ir_digest
from expc.runtime.folder_claim import claim_folder, clear_own_files
from expc.spec.diagnostics import DiagnosticError, fail
from expc.spec.run_format import (CHECKPOINT_DIR, FILES_FIELD, FORMAT, MANIFEST, META_MEANINGS,
                                  OUTPUT_FILES, REQUIRED_FIELDS, RESULTS, RUN_FOLDER_CODE,
                                  read_run_manifest)

log = logging.getLogger(__name__)


def spec_sha256(text: str) -> str:
    """The fingerprint that ties a run folder to its spec text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@attrs.define(kw_only=True)
class RunStore:
    """Writes one run folder; create it with `RunStore.start`."""

    run_dir: Path
    manifest: dict
    resuming: bool = False  # the folder holds this spec's earlier run and --resume was asked
    _results_written: bool = False

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
        entries = {key: _describe(key, tensor, descriptions.get(key))
                   for key, tensor in tensors.items()}
        save_safetensors_atomic(self.results_path, tensors)
        self.manifest["tensors"] = entries
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


def _describe(key: str, tensor: torch.Tensor, description: Mapping | None) -> dict:
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
    return {"shape": list(tensor.shape), "dtype": _dtype_name(tensor.dtype), **description}


@attrs.frozen(kw_only=True)
class LazyTensors(Mapping):
    """`{key: tensor}` over results.safetensors; each tensor is read when first asked for."""

    results_path: Path | None  # None when the run wrote no results (yet)
    stored_keys: tuple[str, ...]
    _loaded: dict = attrs.field(factory=dict, init=False)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._loaded:
            if key not in self.stored_keys:
                raise KeyError(key)
            with safe_open(str(self.results_path), framework="pt") as handle:
                self._loaded[key] = handle.get_tensor(key)
        return self._loaded[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored_keys)

    def __len__(self) -> int:
        return len(self.stored_keys)


@attrs.frozen(kw_only=True)
class Run:
    """A run folder read back: its manifest, and its tensors loaded on first access."""

    path: Path
    manifest: Mapping
    tensors: LazyTensors  # one cache per run: a tensor is read from disk once

    @property
    def status(self) -> str:
        return self.manifest["status"]


def _read_keys(results: Path | None) -> tuple[str, ...]:
    if results is None:
        return ()
    try:
        with safe_open(str(results), framework="pt") as handle:
            return tuple(sorted(handle.keys()))
    except (SafetensorError, OSError, ValueError) as exc:
        raise fail(results, f"cannot read {RESULTS}: {exc}", code=RUN_FOLDER_CODE) from None


def open_run(run_dir: str | Path) -> Run:
    """Read a run folder back (raises `DiagnosticError` naming the file if it is not one)."""
    manifest, results = read_run_manifest(run_dir)
    return Run(path=Path(run_dir), manifest=manifest,
               tensors=LazyTensors(results_path=results, stored_keys=_read_keys(results)))
