"""Per-sample rows go to disk in shards while the run goes on, so memory stays flat.

The capture states keep the rows of the batches since the last shard (on the host,
`runtime/host_rows.py`). After each batch the loop offers them to the `ResultsWriter`: once
they hold `output { shard_size }` bytes or more, every streamed key's rows are taken from its
state and become one shard, `results-rank{r}-{n:05d}.partial.safetensors` (spec/run_format.py
names it), with one tensor per key named as a *piece*, `@{first_row}/{key}`, where
`first_row` counts rows in run order across the whole run (rank 0's rows, then rank 1's).
So a shard holds at least `shard_size` bytes of rows and at most that plus one batch, and
where shards are cut depends only on `shard_size` and the batch plan: a resumed run cuts
them exactly where an uninterrupted one does.

Shards are written by one background thread (atomic writes, `runtime/atomic.py`: each
shard is fsynced before it gets its name, so no name ever shows a torn shard) from a
queue of at most one waiting shard: the loop goes on while a shard is written, and blocks
only if a second one is ready before the first is on disk, so memory holds at most about
three shards' worth of rows (buffered, queued, being written). `flush` waits for the queue
and fsyncs the folder once for every shard renamed since the last flush (a folder
fsync per shard halved the write speed of small shards); a checkpoint calls it, then
records `shards` (every shard now complete on disk, names included) in its cursor, beside
the states that hold the rows not yet in a shard. `resume` takes that record back and
removes this rank's later shards (written after the checkpoint, so rewritten).
The finish (`runtime/store.py`) joins every rank's shards into the final layout.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import torch

from expc.runtime.atomic import fsync_folder, os_errors_named, remove_stale_temps
from expc.runtime.atomic_tensors import save_safetensors_atomic
from expc.spec.diagnostics import fail
from expc.spec.run_format import PARTIAL_PATTERN, partial_name, piece_name

log = logging.getLogger(__name__)

Rows = Mapping[str, torch.Tensor]  # key -> its rows `[n, ...]` in run order
_DAMAGED = "checkpoint-damaged"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@attrs.define(kw_only=True, eq=False)
class ResultsWriter:
    """One rank's shards; see the module docstring. Create it with `ResultsWriter.resume`."""

    folder: Path
    rank: int
    shard_size: int
    first_row: int  # this rank's first row in run order (rows of lower ranks come before)
    shards: list[dict]  # each {"file", "pieces": [{"key", "first", "rows", "shape", "dtype"}]}
    _next_row: dict[str, int]  # per key, the run-order row its next piece starts at
    _queue: queue.Queue = attrs.field(factory=lambda: queue.Queue(maxsize=1))
    _thread: threading.Thread | None = None
    _error: BaseException | None = None
    _unsynced: bool = False  # a shard was renamed into the folder since its last fsync

    @classmethod
    def resume(cls, folder: Path, *, rank: int, shard_size: int, first_row: int,
               shards: Sequence[Mapping] = ()) -> ResultsWriter:
        """A writer continuing after `shards` (a checkpoint's record; none for a fresh run)
        whose rows start at run-order row `first_row`; this rank's other shard files
        (and temporary files) are removed, and the recorded ones must exist."""
        shards = [dict(shard) for shard in shards]
        keep = {shard["file"] for shard in shards}
        with os_errors_named(folder, doing="clean"):
            remove_stale_temps(folder, accept=lambda name: name.startswith(
                f".results-rank{rank}-"))
            for path in folder.glob(PARTIAL_PATTERN):
                if path.name.startswith(f"results-rank{rank}-") and path.name not in keep:
                    path.unlink()
        next_row: dict[str, int] = {}
        for shard in shards:
            if not (folder / shard["file"]).is_file():
                raise fail(folder / shard["file"], "the checkpoint names this results shard "
                           "but it is missing", code=_DAMAGED,
                           help=["run again without --resume to start over"])
            for piece in shard["pieces"]:
                next_row[piece["key"]] = piece["first"] + piece["rows"]
        return cls(folder=folder, rank=rank, shard_size=shard_size, first_row=first_row,
                   shards=shards, next_row=next_row)

    @property
    def cut_any(self) -> bool:
        """Whether this rank has written (or queued) a shard."""
        return bool(self.shards)

    def offer(self, buffered: int, take: Callable[[], Rows]) -> None:
        """After a batch: `buffered` bytes of rows are held; from `shard_size` on, `take()`
        them and write them as the next shard."""
        if buffered >= self.shard_size:
            self.cut(take())

    def cut(self, rows: Rows) -> None:
        """Queue `rows` (every key's, run order) as this rank's next shard; none: nothing."""
        rows = {key: tensor for key, tensor in rows.items() if len(tensor)}
        if not rows:
            return
        name = partial_name(self.rank, len(self.shards) + 1)
        tensors, pieces = {}, []
        for key, tensor in rows.items():
            first = self._next_row.get(key, self.first_row)
            tensors[piece_name(key, first)] = tensor
            pieces.append({"key": key, "first": first, "rows": len(tensor),
                           "shape": list(tensor.shape), "dtype": dtype_name(tensor.dtype)})
            self._next_row[key] = first + len(tensor)
        self.shards.append({"file": name, "pieces": pieces})
        self._put((self.folder / name, tensors))
        log.debug("rank %d: shard %s queued", self.rank, name)

    def flush(self) -> list[dict]:
        """Wait until every queued shard is on disk, names included (the folder fsynced);
        return the record of all of them."""
        if self._thread is not None:
            self._queue.join()
        self._raise()
        if self._unsynced:
            fsync_folder(self.folder)
            self._unsynced = False
        return [dict(shard) for shard in self.shards]

    def close(self) -> None:
        """Stop the writing thread once the queue is empty (a shard in writing finishes)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _put(self, item) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="expc-shards", daemon=True)
            self._thread.start()
        self._queue.put(item)

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self._unsynced = True
                    save_safetensors_atomic(*item, sync_folder=False)
            except BaseException as exc:  # handed to the loop's thread by `_raise`
                self._error = exc
            finally:
                self._queue.task_done()
