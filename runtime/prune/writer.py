"""Write the pruned checkpoint folder: shards streamed tensor by tensor, all or nothing.

Everything goes into a temporary sibling folder (`.NAME.expc-prune-PID.tmp`) that is renamed
to the output folder only once every file is complete, so a failure at any point leaves no
half-written checkpoint (the temporary folder is removed). A sharded source keeps its
sharding: each source shard becomes one output shard holding the same tensors, pruned
(`model-0000i-of-0000n.safetensors` and `model.safetensors.index.json`, shards left empty by
removed layers dropped); a single `model.safetensors` stays one file. Each shard's header is
read once (dtype, shape and byte range of every tensor); tensors are then copied or gathered
from those byte ranges one at a time (`stream.write_streamed`, with one `Scratch` for the
whole checkpoint), so memory holds one tensor and its pruned copy, never a shard. The
tokenizer files beside the weights are copied as they are.

The output is durable before it is visible: every file and the temporary folder are fsynced
before the rename, and the parent folder after it, so a crash leaves either no output
folder or a complete one (the benchmark's copy reference fsyncs likewise). Shards are
fsynced as they are finished, behind the writing of the next (`synced_behind`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import attrs
import numpy as np

from expc.models.checkpoint import INDEX_FILE, SINGLE_FILE, Checkpoint
from expc.runtime.atomic import fsync_path, os_errors_named
from expc.runtime.prune.rules import Slice
from expc.runtime.prune.stream import Entry, Gather, Scratch, read_layout, write_streamed
from expc.runtime.prune.units import CODE
from expc.spec.diagnostics import fail

PROVENANCE = "expc_prune.json"
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.model",
                "generation_config.json")
METADATA = {"format": "pt"}  # what transformers expects of a PyTorch safetensors file
MIN_RUN_BYTES = 1 << 20  # row cuts copied as byte ranges only when their runs average this


@attrs.frozen(kw_only=True)
class TensorSource:
    """A checkpoint's tensors by file: their names, dtypes and shapes, and where they are."""

    files: tuple[tuple[str, ...], ...]  # tensor names per source file, in file order
    sharded: bool
    info: Callable[[str], tuple[str, tuple[int, ...]]]  # safetensors dtype name, shape
    folder: Path | None  # where the tokenizer files are (None: a built-in model)
    # a tensor's bytes in its file: (file, offset, length); None for a built-in model
    locate: Callable[[str], tuple[Path, int, int]] | None = None
    read: Callable[[str], np.ndarray] | None = None  # a built-in model's generated tensor

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's stored shape, in file order."""
        return {name: self.info(name)[1] for names in self.files for name in names}


def tensor_source(checkpoint) -> TensorSource:
    """The tensors of an opened checkpoint folder or built-in model."""
    if not isinstance(checkpoint, Checkpoint):  # a built-in: generated float32 tensors
        return TensorSource(files=(tuple(checkpoint.keys()),), sharded=False, folder=None,
                            info=lambda name: ("F32", checkpoint.shape(name)),
                            read=lambda name: checkpoint.get_tensor(name).numpy())
    shards = sorted(set(checkpoint.locations.values()))
    layout = read_layout(shards)
    files = tuple(tuple(sorted(n for n, s in checkpoint.locations.items() if s == shard))
                  for shard in shards)
    return TensorSource(files=files, sharded=checkpoint.listing.name == INDEX_FILE,
                        info=lambda name: layout[name][:2], folder=checkpoint.folder,
                        locate=lambda name: layout[name][2])


def _row_runs(index: np.ndarray) -> list[tuple[int, int]]:
    """Kept rows as (first, count) runs of consecutive indices (`index` ascending)."""
    if not len(index):
        return []
    breaks = (np.flatnonzero(index[1:] - index[:-1] != 1) + 1).tolist()
    starts, ends = [0, *breaks], [*breaks, len(index)]
    firsts = index[starts].tolist()
    return [(first, end - start) for first, start, end in zip(firsts, starts, ends)]


def _ranges(source: TensorSource, name: str, cut: Slice, shape: tuple[int, ...]
            ) -> tuple[tuple[Path, int, int], ...]:
    """The source bytes of a tensor kept whole or cut to some rows; () when it must be read."""
    if source.locate is None or cut.dim not in (None, 0):
        return ()
    file, offset, length = source.locate(name)
    if cut.dim is None:
        return ((file, offset, length),)
    if not shape or bool((cut.index[1:] <= cut.index[:-1]).any()):
        return ()
    row = length // shape[0]
    runs = _row_runs(cut.index)
    if sum(count for _, count in runs) * row < MIN_RUN_BYTES * len(runs):
        return ()  # scattered rows: one gather in memory beats many small kernel copies
    return tuple((file, offset + first * row, count * row) for first, count in runs)


def _entry(source: TensorSource, name: str, cut: Slice) -> Entry:
    dtype, shape = source.info(name)
    if source.locate is None:  # a built-in model: generate, then cut
        return Entry(name=cut.key, dtype=dtype, shape=cut.shape(shape),
                     produce=lambda: cut.apply(source.read(name)))
    ranges = _ranges(source, name, cut, shape)
    if ranges:
        return Entry(name=cut.key, dtype=dtype, shape=cut.shape(shape), ranges=ranges)
    file, offset, _ = source.locate(name)
    return Entry(name=cut.key, dtype=dtype, shape=cut.shape(shape),
                 gather=Gather(file=file, offset=offset, shape=shape, dim=cut.dim,
                               index=cut.index))


@contextmanager
def synced_behind() -> Iterator[Callable[[Path], None]]:
    """`sync(path)` fsyncs a finished file in a background thread while the next one is
    written (an fsync waits on the disk, not the CPU, and releases the GIL), so the disk
    writes the shards out as they are finished rather than all at once before the rename
    (1.6 s -> 1.1 s for the benchmark's 1.1B checkpoint); leaving the block waits for every
    fsync and raises the first error."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        yield lambda path: pending.append(pool.submit(fsync_path, path))
        for future in pending:
            future.result()


def write_weights(folder: Path, source: TensorSource, slices: Mapping[str, Slice]) -> None:
    """The pruned safetensors file(s), plus the index when the source was sharded."""
    groups = [[_entry(source, name, slices[name]) for name in names if name in slices]
              for names in source.files]
    groups = [group for group in groups if group]
    with Scratch() as scratch:
        if not source.sharded:
            write_streamed(folder / SINGLE_FILE, [e for group in groups for e in group],
                           METADATA, scratch=scratch)
            return
        weight_map, total = {}, 0
        with synced_behind() as sync:
            for number, group in enumerate(groups, start=1):
                name = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
                total += write_streamed(folder / name, group, METADATA, scratch=scratch)
                weight_map.update({entry.name: name for entry in group})
                sync(folder / name)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def copy_tokenizer(source: TensorSource, folder: Path) -> list[str]:
    """Copy the source's tokenizer (and generation) files; their names."""
    if source.folder is None:
        return []
    copied = [name for name in COPIED_FILES if (source.folder / name).is_file()]
    for name in copied:
        shutil.copy2(source.folder / name, folder / name)
    return copied


def refuse_existing(out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise fail(out, f"output folder `{out}` already exists", code=CODE,
                   help=("give a new folder; expc prune never overwrites one",))


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary sibling of `out`, renamed to `out` when the block succeeds, else removed."""
    refuse_existing(out)
    temp = out.with_name(f".{out.name}.expc-prune-{os.getpid()}.tmp")
    with os_errors_named(out, doing="create"):
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
    try:
        with os_errors_named(out):
            yield temp
        with os_errors_named(out):
            for path in [*sorted(temp.iterdir()), temp]:  # durable before it is visible
                fsync_path(path)
        refuse_existing(out)  # created meanwhile by someone else
        with os_errors_named(out, doing="create"):
            os.rename(temp, out)
            fsync_path(out.parent)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

