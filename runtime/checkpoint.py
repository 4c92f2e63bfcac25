"""Resumable checkpoints: the state of every aggregator and metric, plus the data cursor.

A checkpoint is two files per rank in the run's `checkpoint/` folder:
`rank{r}-state-{batches:08d}.safetensors` (every state object's `state_dict()`) and
`rank{r}-cursor.json` (how far the run got, and which state file
belongs to that point). The state file is written first under a new name, the cursor last;
both writes are atomic, and older state files are deleted only after the new cursor is in
place. So a crash at any moment leaves a cursor naming a complete state file of the same
moment: a resumed run never counts a batch twice or loses one.

The cursor records the sha256 of its state file and the run's fingerprint
(`runtime/fingerprint.py`). Resuming checks both, and the cursor's counts against the
batch plan: a state file changed after it was written (one flipped bit, a same-size
overwrite), a checkpoint of other inputs or impossible counts is an error naming the file
and what is wrong, never a silent restart. (Older state files are deleted once a newer
cursor is in place, so there is no earlier good checkpoint to fall back to; starting over is
the user's choice: run without `--resume`.)
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError, safe_open

from expc.runtime.atomic import remove_stale_temps, write_json_atomic
from expc.runtime.atomic_tensors import save_safetensors_atomic
from expc.runtime.fingerprint import changed_parts, file_digest
from expc.runtime.state_protocol import State
from expc.spec.diagnostics import DiagnosticError, fail
from expc.spec.json_files import read_json_object

log = logging.getLogger(__name__)

CURSOR_FORMAT = "expc-checkpoint/1"
_LAYOUT_KEY = "layout"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DAMAGED = "checkpoint-damaged"
_START_OVER = ["run again without --resume to start over"]

StateDicts = Mapping[str, Mapping[str, torch.Tensor]]


@attrs.frozen(kw_only=True)
class Cursor:
    """How far a run got when its checkpoint was taken.

    Cursors written before `tokens_done` and the `rng` state entry were dropped (nothing
    set or read them) still load: the extra entries are ignored.
    """

    batches_done: int
    samples_done: int
    elapsed_seconds: float
    fingerprint: Mapping[str, str] | None = None  # what must match to resume, by part
    shards: tuple[Mapping, ...] = ()  # results shards complete on disk (results_writer.py)


def cursor_name(rank: int) -> str:
    return f"rank{rank}-cursor.json"


def state_name(rank: int, batches_done: int) -> str:
    return f"rank{rank}-state-{batches_done:08d}.safetensors"


def save_checkpoint(folder: str | Path, *, states: StateDicts, cursor: Cursor,
                    rank: int = 0) -> Path:
    """Write the states, then the cursor naming them; returns the cursor file's path."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, list[str]] = {}
    for position, (name, state) in enumerate(states.items()):
        layout[name] = list(state)
        for key, tensor in state.items():
            tensors[f"{position}/{key}"] = tensor
    state_file = state_name(rank, cursor.batches_done)
    save_safetensors_atomic(folder / state_file, tensors,
                            metadata={_LAYOUT_KEY: json.dumps(layout)})
    cursor_path = folder / cursor_name(rank)
    write_json_atomic(cursor_path, {
        "format": CURSOR_FORMAT, "rank": rank, "state_file": state_file,
        "state_bytes": (folder / state_file).stat().st_size,
        "state_sha256": file_digest(folder / state_file),
        "batches_done": cursor.batches_done, "samples_done": cursor.samples_done,
        "elapsed_seconds": cursor.elapsed_seconds,
        "fingerprint": None if cursor.fingerprint is None else dict(cursor.fingerprint),
        "shards": [dict(shard) for shard in cursor.shards],
    })
    _remove_superseded(folder, rank=rank, keep=state_file)
    log.debug("checkpoint rank %d at batch %d", rank, cursor.batches_done)
    return cursor_path


def load_checkpoint(folder: str | Path, *, rank: int = 0,
                    fingerprint: Mapping[str, str] | None = None
                    ) -> tuple[dict[str, dict[str, torch.Tensor]], Cursor] | None:
    """The last consistent checkpoint of `rank`, or None if there is none.

    A damaged cursor, a state file whose bytes are not those the cursor recorded, or a
    cursor whose fingerprint differs from `fingerprint` (when given) is a `DiagnosticError`
    naming the file (and, for the fingerprint, the parts that changed).
    """
    folder = Path(folder)
    cursor_path = folder / cursor_name(rank)
    if not cursor_path.exists():
        return None
    record = _read_cursor(cursor_path, rank=rank)
    if fingerprint is not None:
        changed = changed_parts(record["fingerprint"], fingerprint)
        if changed:
            raise fail(
                cursor_path, "checkpoint belongs to a different run set-up: "
                f"{', '.join(changed)} changed since it was written", code="checkpoint-stale",
                help=_START_OVER)
    state_path = folder / record["state_file"]
    try:
        if state_path.stat().st_size != record["state_bytes"]:
            raise ValueError(f"size differs from the {record['state_bytes']} bytes recorded")
        if file_digest(state_path) != record["state_sha256"]:
            raise ValueError("its content differs from the sha256 the cursor recorded "
                             "(changed after it was written)")
        flat, metadata = _read_state(state_path)
        layout = json.loads(metadata[_LAYOUT_KEY])
        states = {name: {key: flat[f"{position}/{key}"] for key in keys}
                  for position, (name, keys) in enumerate(layout.items())}
    except (DiagnosticError, OSError, ValueError, KeyError, TypeError, AttributeError,
            SafetensorError) as exc:
        reason = "; ".join(d.message for d in exc.diagnostics) if isinstance(
            exc, DiagnosticError) else str(exc) or repr(exc)
        raise fail(
            state_path, f"checkpoint state file is unusable: {reason}", code=_DAMAGED,
            help=_START_OVER) from None
    cursor = Cursor(batches_done=record["batches_done"], samples_done=record["samples_done"],
                    elapsed_seconds=record["elapsed_seconds"], fingerprint=record["fingerprint"],
                    shards=tuple(record["shards"]))
    return states, cursor


def resume_states(folder: str | Path, *, rank: int, fingerprint: Mapping[str, str] | None,
                  states: Mapping[str, State], batches) -> Cursor | None:
    """Load `rank`'s checkpoint into `states` and return its cursor (None: no checkpoint).

    Beyond `load_checkpoint`'s checks, the cursor must fit `batches` (the rank's
    `BatchPlan`: its count and the samples before each batch) and the state file must hold
    exactly these states, each accepted by its `load_state_dict`; anything else is a
    diagnostic naming the file.
    """
    folder = Path(folder)
    restored = load_checkpoint(folder, rank=rank, fingerprint=fingerprint)
    if restored is None:
        return None
    saved, cursor = restored
    if cursor.batches_done > len(batches) or (
            cursor.samples_done != batches.samples_before(cursor.batches_done)):
        raise fail(folder / cursor_name(rank), f"checkpoint cursor is impossible for this run: "
                   f"{cursor.batches_done} batches and {cursor.samples_done} samples done, "
                   f"of {len(batches)} batches", code=_DAMAGED, help=_START_OVER)
    state_path = folder / state_name(rank, cursor.batches_done)
    if set(saved) != set(states):
        raise fail(state_path, "checkpoint state file holds other states than this run's",
                   code=_DAMAGED, help=_START_OVER)
    for name, state in states.items():
        try:
            state.load_state_dict(saved[name])
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
            raise fail(state_path, f"checkpoint state of `{name}` does not fit this run: "
                       f"{type(exc).__name__}: {exc}", code=_DAMAGED, help=_START_OVER
                       ) from None
    return cursor


def _cursor_problem(record: dict, *, rank: int) -> str | None:
    """What makes a cursor record impossible, or None."""
    counts = ("state_bytes", "batches_done", "samples_done")
    if record.get("format") != CURSOR_FORMAT:
        return f"not an {CURSOR_FORMAT} cursor"
    bad = [k for k in counts if type(record.get(k)) is not int or record[k] < 0]
    elapsed = record.get("elapsed_seconds")
    if type(elapsed) not in (int, float) or not math.isfinite(elapsed) or elapsed < 0:
        bad.append("elapsed_seconds")
    if not isinstance(record.get("state_file"), str):
        bad.append("state_file")
    if not isinstance(record.get("state_sha256"), str) or not _SHA256.match(
            record["state_sha256"]):
        bad.append("state_sha256")
    fingerprint = record.get("fingerprint")
    if fingerprint is not None and not (isinstance(fingerprint, dict) and all(
            isinstance(v, str) for v in fingerprint.values())):
        bad.append("fingerprint")
    if not _shards_record(record.get("shards", [])):
        bad.append("shards")
    if bad:
        return "missing or impossible fields: " + ", ".join(bad)
    if record["state_file"] != state_name(rank, record["batches_done"]):
        return f"state_file must be `{state_name(rank, record['batches_done'])}`"
    return None


def _shards_record(shards: object) -> bool:
    """Whether `shards` is a list of results shard records (`results_writer.py`)."""
    def piece(p: object) -> bool:
        return (isinstance(p, dict) and isinstance(p.get("key"), str)
                and all(type(p.get(k)) is int and p[k] >= 0 for k in ("first", "rows"))
                and isinstance(p.get("shape"), list) and isinstance(p.get("dtype"), str))
    return isinstance(shards, list) and all(
        isinstance(s, dict) and isinstance(s.get("file"), str) and "/" not in s["file"]
        and isinstance(s.get("pieces"), list) and all(map(piece, s["pieces"]))
        for s in shards)


def _read_cursor(path: Path, *, rank: int) -> dict:
    record = read_json_object(path, what="checkpoint cursor", code=_DAMAGED)
    problem = _cursor_problem(record, rank=rank)
    if problem:
        raise fail(path, f"checkpoint cursor is damaged ({problem})", code=_DAMAGED,
                   help=_START_OVER)
    record.setdefault("fingerprint", None)
    record.setdefault("shards", [])
    return record


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}


def _remove_superseded(folder: Path, *, rank: int, keep: str) -> None:
    """Delete this rank's older state files and any temp files crashed writes left."""
    prefix = f"rank{rank}-state-"
    for old in folder.glob(f"{prefix}*.safetensors"):
        if old.name != keep:
            old.unlink(missing_ok=True)
    remove_stale_temps(folder, accept=lambda name: name.startswith(f".{prefix}")
                       or name.startswith(f".{cursor_name(rank)}"))
