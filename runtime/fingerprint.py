"""What a run's results depend on, as digests: the experiment, the data, the model.

`--resume` continues a checkpoint only when nothing that decides its numbers has changed
since it was written, and a re-run into a folder is "the same spec" when the experiment is
the same. The scheme, chosen to be sound and cheap:
- the experiment: sha256 of its canonical IR (`spec.to_json`, keys sorted). Includes,
  `extends` and `--set` are resolved into the IR, so an edited included file changes it;
  comments, layout and `expc fmt` do not.
- the data: sha256 of the data file's bytes. The run reads the whole file anyway, and hashing
  runs at disk speed, well below tokenising it.
- the model: sha256 of the folder's small files (`config.json`, tokenizer files, the
  checkpoint index) and of each weight file's name, size and modification time. Hashing
  gigabytes of weights on every resume would cost minutes; rewriting a weight file changes
  its mtime. A built-in model is its name and the expc version that builds it.
- the number of processes (a checkpoint is one per rank).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping
from pathlib import Path

from expc.spec import ir, to_json

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def experiment_digest(experiment: ir.Experiment) -> str:
    """sha256 of the canonical IR: equal for specs that differ only in form."""
    return _sha256_text(json.dumps(to_json(experiment), sort_keys=True, ensure_ascii=False))


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def model_digest(model: ir.ModelRef) -> str:
    """A digest of what the model reference loads: see the module docstring."""
    if model.builtin_name is not None:
        return _sha256_text(f"{model.path}\n{importlib.metadata.version('expc')}")
    folder = Path(model.path)
    parts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if path.suffix in WEIGHT_SUFFIXES:
            stat = path.stat()
            parts.append(f"{name} {stat.st_size} {stat.st_mtime_ns}")
        else:
            parts.append(f"{name} {file_digest(path)}")
    return _sha256_text("\n".join(parts))


def run_fingerprint(experiment: ir.Experiment, *, world_size: int) -> Mapping[str, str]:
    """Every digest a checkpoint must match to be resumed, by what it covers."""
    return {"experiment": experiment_digest(experiment),
            "data": file_digest(experiment.data.source.path),
            "model": model_digest(experiment.model),
            "processes": str(world_size)}


def changed_parts(recorded: object, current: Mapping[str, str]) -> list[str]:
    """What differs between a recorded fingerprint and the current one, for the message."""
    if not isinstance(recorded, Mapping):
        return ["the checkpoint's format"]
    return [name for name, digest in current.items() if recorded.get(name) != digest]
