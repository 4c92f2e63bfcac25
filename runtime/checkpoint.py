"""Resumable checkpoints: the state of every aggregator and metric, plus the data cursor.

A checkpoint is two files per rank in the run's `checkpoint/` folder:
`rank{r}-state-{batches:08d}.safetensors` (every state object's `state_dict()`) and
`rank{r}-cursor.json` (how far the run got, and which state file
belongs to that point). The state file is written first under a new name, the cursor last;
both writes are atomic, and older state files are deleted only after the new cursor is in
place. So a crash at any moment leaves a cursor naming a complete state file of the same
moment: a resumed run never counts a batch twice or loses one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError, safe_open

from expc.runtime.atomic import remove_stale_temps, save_safetensors_atomic, write_json_atomic
from expc.spec.diagnostics import fail
from expc.spec.json_files import read_json_object

log = logging.getLogger(__name__)

CURSOR_FORMAT = "expc-checkpoint/1"
_LAYOUT_KEY = "layout"

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
    fingerprint: str | None = None  # whatever must match to resume (spec sha, data, world)


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
        "batches_done": cursor.batches_done, "samples_done": cursor.samples_done,
        "elapsed_seconds": cursor.elapsed_seconds,
        "fingerprint": cursor.fingerprint,
    })
    _remove_superseded(folder, rank=rank, keep=state_file)
    log.debug("checkpoint rank %d at batch %d", rank, cursor.batches_done)
    return cursor_path


def load_checkpoint(folder: str | Path, *, rank: int = 0, fingerprint: str | None = None
                    ) -> tuple[dict[str, dict[str, torch.Tensor]], Cursor] | None:
    """The last consistent checkpoint of `rank`, or None if there is none.

    A damaged cursor or state file, or a cursor whose fingerprint differs from
    `fingerprint` (when given), is a `DiagnosticError` naming the file.
    """
    folder = Path(folder)
    cursor_path = folder / cursor_name(rank)
    if not cursor_path.exists():
        return None
    record = _read_cursor(cursor_path)
    if fingerprint is not None and record["fingerprint"] != fingerprint:
        raise fail(
            cursor_path, "checkpoint belongs to a different run set-up (spec, data or number "
                         "of processes changed since it was written)", code="checkpoint-stale",
            help=["run again without --resume to start over"])
    state_path = folder / record["state_file"]
    try:
        if state_path.stat().st_size != record["state_bytes"]:
            raise ValueError(f"size differs from the {record['state_bytes']} bytes recorded")
        flat, metadata = _read_state(state_path)
        layout = json.loads(metadata[_LAYOUT_KEY])
        states = {name: {key: flat[f"{position}/{key}"] for key in keys}
                  for position, (name, keys) in enumerate(layout.items())}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as exc:
        raise fail(
            state_path, f"checkpoint state file is unreadable: {exc!r}",
            code="checkpoint-damaged",
            help=["delete the checkpoint folder and run again without --resume"]) from None
    cursor = Cursor(batches_done=record["batches_done"], samples_done=record["samples_done"],
                    elapsed_seconds=record["elapsed_seconds"], fingerprint=record["fingerprint"])
    return states, cursor


def _read_cursor(path: Path) -> dict:
    fields = {"state_file": str, "state_bytes": int, "batches_done": int, "samples_done": int,
              "elapsed_seconds": (int, float)}
    record = read_json_object(path, what="checkpoint cursor", code="checkpoint-damaged")
    problem = None
    if record.get("format") != CURSOR_FORMAT:
        problem = f"not an {CURSOR_FORMAT} cursor"
    else:
        bad = [k for k, kind in fields.items() if not isinstance(record.get(k), kind)]
        if bad:
            problem = "missing or wrong fields: " + ", ".join(bad)
        elif "/" in record["state_file"] or "\\" in record["state_file"]:
            problem = "state_file must be a plain file name"
    if problem:
        raise fail(path, f"checkpoint cursor is damaged ({problem})",
                                    code="checkpoint-damaged",
                                    help=["delete the checkpoint folder and run again without "
                                          "--resume"])
    record.setdefault("fingerprint", None)
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
