"""What a run's results depend on, as digests: the experiment, the data, the model, versions.

`--resume` continues a checkpoint only when nothing that decides its numbers has changed
since it was written, and a re-run into a folder is "the same spec" when the experiment is
the same. The scheme, chosen to be sound and cheap:
- the experiment: sha256 of its canonical IR (`spec.to_json`, keys sorted), less the two
  fields that cannot change a number: the spec file's `path` and the `output` block (where
  the folder is, how often to checkpoint). Includes, `extends` and `--set` are resolved into
  the IR, so an edited included file changes it; comments, layout and `expc fmt` do not.
- the data: sha256 of every file the source reads (`spec/data_files.source_paths`: the
  line file, each file a parquet glob matches, each Arrow file of a saved dataset), with its
  name, so a file added to a glob's match changes it too. The run reads every file anyway, and
  hashing runs at disk speed, well below tokenising it.
- the model: the folder's top-level files (the only ones a model is loaded from): sha256 of
  each small file (`config.json`, tokenizer files, the checkpoint index) and the name, size
  and modification time of each weight file or file over `SMALL_FILE_BYTES`. Hashing
  gigabytes of weights on every resume would cost minutes; rewriting a weight file changes
  its mtime (copying a model folder without keeping mtimes counts as a change: safe side).
  A built-in model is its name and the expc version that builds it.
- the earlier run folders interventions read (`run = "DIR"`): sha256 of each one's manifest
  and the name, size and modification time of its results file; a `head_models` folder
  counts like the model;
- the versions of expc and torch (kernels change numbers across releases);
- the number of processes (a checkpoint is one per rank).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from expc.spec import ir, to_json
from expc.spec.data_files import source_paths
from expc.spec.diagnostics import fail
from expc.spec.run_format import MANIFEST, RESULTS, RESULTS_INDEX

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
SMALL_FILE_BYTES = 64 << 20  # hashed whole below this size; above, by name, size and mtime
_NOT_RESULTS = ("path", "output")  # IR fields that cannot change a result


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ir_digest(ir_json: Mapping) -> str:
    """sha256 of the canonical IR JSON (`spec.to_json`) less its `_NOT_RESULTS` fields."""
    kept = {key: value for key, value in ir_json.items() if key not in _NOT_RESULTS}
    return _sha256_text(json.dumps(kept, sort_keys=True, ensure_ascii=False))


def experiment_digest(experiment: ir.Experiment) -> str:
    """`ir_digest` of an experiment: equal for specs that differ only in form."""
    return ir_digest(to_json(experiment))


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks; a file that cannot be read is a diagnostic."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise fail(path, f"cannot read `{path}` to fingerprint it: {exc.strerror or exc}",
                   code="fingerprint-unreadable") from None


def data_digest(source: ir.Source) -> str:
    """A digest of every file the data source reads (see the module docstring)."""
    return _sha256_text("\n".join(f"{path} {file_digest(path)}"
                                   for path in source_paths(source)))


def model_digest(model: ir.ModelRef) -> str:
    """A digest of what the model reference loads: see the module docstring."""
    if model.builtin_name is not None:
        return _sha256_text(f"{model.path}\n{importlib.metadata.version('expc')}")
    folder = Path(model.path)
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        parts = []
        for path in files:
            stat = path.stat()
            if path.suffix in WEIGHT_SUFFIXES or stat.st_size > SMALL_FILE_BYTES:
                parts.append(f"{path.name} {stat.st_size} {stat.st_mtime_ns}")
            else:
                parts.append(f"{path.name} {file_digest(path)}")
    except OSError as exc:
        raise fail(folder, f"cannot read the model folder to fingerprint it: "
                   f"{exc.strerror or exc}", code="fingerprint-unreadable") from None
    return _sha256_text("\n".join(parts))


def source_runs(experiment: ir.Experiment) -> tuple[str, ...]:
    """The earlier run folders the experiment's interventions read, sorted."""
    runs = set()
    for intervention in experiment.interventions:
        runs.add(intervention.operation.run)
        if intervention.channels is not None:
            runs.add(intervention.channels.run)
    return tuple(sorted(run for run in runs if run))


def sources_digest(experiment: ir.Experiment) -> str:
    """A digest of the earlier run folders the interventions read (see the module docstring)."""
    parts = []
    for run in source_runs(experiment):
        results = Path(run) / RESULTS
        if not results.exists() and (Path(run) / RESULTS_INDEX).exists():  # a sharded run
            results = Path(run) / RESULTS_INDEX
        try:
            stat = results.stat()
        except OSError as exc:
            raise fail(results, f"cannot read `{results}` to fingerprint it: "
                       f"{exc.strerror or exc}", code="fingerprint-unreadable") from None
        parts.append(f"{run} {file_digest(Path(run) / MANIFEST)} {stat.st_size} "
                     f"{stat.st_mtime_ns}")
    return _sha256_text("\n".join(parts))


def run_fingerprint(experiment: ir.Experiment, *, world_size: int) -> dict[str, str]:
    """Every digest a checkpoint must match to be resumed, by what it covers."""
    head_models = () if experiment.hydra is None else experiment.hydra.head_models
    models = [experiment.model, *(ir.ModelRef(path=path) for path in head_models)]
    return {"experiment": experiment_digest(experiment),
            "data": data_digest(experiment.data.source),
            "model": _sha256_text(" ".join(model_digest(model) for model in models)),
            "sources": sources_digest(experiment),
            "versions": f"expc {importlib.metadata.version('expc')} torch {torch.__version__}",
            "processes": str(world_size)}


def changed_parts(recorded: object, current: Mapping[str, str]) -> list[str]:
    """The parts of `current` that a recorded fingerprint does not match, in order; all of
    them when the record is not a fingerprint of this scheme (an older cursor)."""
    if not isinstance(recorded, Mapping):
        return list(current)
    return [name for name, digest in current.items() if recorded.get(name) != digest]
