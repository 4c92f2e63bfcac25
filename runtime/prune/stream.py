"""Write a safetensors file one tensor at a time, reading each from its source as it goes.

`safetensors.torch.save_file` wants every tensor in memory at once (and copies each to
bytes), which for a checkpoint shard is the shard twice over. The format is simple enough
to stream: an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
shape and byte range, padded with spaces to a multiple of 8, then the tensors' bytes back to
back. The header needs only shapes and dtypes, known from the source's header, so each
tensor is written in turn, one of three ways:

- kept whole, or cut to long runs of rows (dim 0): byte ranges of its source file, copied by
  the kernel (`os.copy_file_range`, what `cp` does), never passing through Python's memory;
- cut along any dimension otherwise (an MLP's `down_proj` loses columns): its bytes are read
  (`os.preadv`) into a scratch buffer, the kept entries gathered by one `numpy.take` on the raw
  elements (a dtype-agnostic unsigned view, several times faster than torch's strided
  `index_select` on bf16) into a second buffer, which the kernel copies to the output
  (`Scratch.send`). The two buffers are reused from tensor to tensor, so memory holds one
  source tensor and its cut, and pages are not faulted in afresh for every tensor;
- a built-in model's generated tensor: produced (as a numpy array), then written.

Tensors are described by their safetensors dtype names and shapes, as the source's header
gives them, and moved as bytes: nothing here needs torch.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import numpy as np

# The safetensors header's dtype names -> bytes per element.
ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
            "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@attrs.frozen(kw_only=True, eq=False)
class Gather:
    """A tensor of a file cut along one dimension: where its bytes start, its stored shape,
    and the kept indices along `dim` (ascending or not, each in range)."""

    file: Path
    offset: int
    shape: tuple[int, ...]
    dim: int
    index: np.ndarray  # [K] int64


@attrs.frozen(kw_only=True)
class Entry:
    """One tensor of the file: its name, dtype and shape, and how to produce it (exactly one
    of `ranges`, `gather` and `produce`)."""

    name: str
    dtype: str  # the safetensors name: "BF16", "F32", ...
    shape: tuple[int, ...]
    ranges: tuple[tuple[Path, int, int], ...] = ()  # (file, offset, length) to copy
    gather: Gather | None = None
    produce: Callable[[], np.ndarray] | None = None  # called once, when it is written

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


class Scratch:
    """The two buffers every gathered tensor reuses: the stored tensor's bytes and its cut.

    The cut lives in a memory-mapped anonymous file (`os.memfd_create`) and reaches the output
    by `os.sendfile`, the kernel's file-to-file copy that `shutil.copyfile` uses, rather than
    by `write` from process memory: on this Linux (6.x, ext4) buffered `write`s are throttled
    to the disk's estimated bandwidth once a few hundred megabytes are dirty (17 MB writes went
    from 3 ms to 35 ms after ~550 MB) while the kernel's own copies are not (a steady 5 ms), so
    a checkpoint's gathered tensors took 1.0 s to write by `write` and ~0.3 s this way. The
    bytes reach the disk at the same fsync either way. Where there is no memfd (not Linux)
    the cut is an ordinary buffer, written by `write`.
    """

    def __init__(self) -> None:
        self._stored = np.empty(0, np.uint8)
        self._cut = np.empty(0, np.uint8)
        self._file: int | None = None  # the memfd behind `_cut`, where there is one

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stored(self, nbytes: int) -> np.ndarray:
        """A buffer of `nbytes` for a stored tensor's bytes."""
        if self._stored.size < nbytes:
            self._stored = np.empty(0, np.uint8)  # free the old one before growing
            self._stored = np.empty(nbytes, np.uint8)
        return self._stored[:nbytes]

    def cut(self, nbytes: int) -> np.ndarray:
        """A buffer of `nbytes` for a cut, which `send` then appends to a file."""
        if self._cut.size < nbytes:
            self.close()
            if hasattr(os, "memfd_create"):
                self._file = os.memfd_create("expc-prune-cut")
                os.ftruncate(self._file, nbytes)
                self._cut = np.frombuffer(mmap.mmap(self._file, nbytes), np.uint8)
            else:
                self._cut = np.empty(nbytes, np.uint8)
        return self._cut[:nbytes]

    def send(self, target: int, nbytes: int) -> None:
        """Append the first `nbytes` of the cut to the file `target`."""
        offset = 0
        while offset < nbytes and self._file is not None:
            try:
                done = os.sendfile(target, self._file, offset, nbytes - offset)
            except OSError:  # an output file system that takes no sendfile: `write` the rest
                break
            if done == 0:
                raise OSError(f"the cut ended {nbytes - offset} bytes early")
            offset += done
        _write_all(target, self._cut[offset:nbytes])

    def close(self) -> None:
        self._cut = np.empty(0, np.uint8)  # the mapping goes with the last array that holds it
        if self._file is not None:
            os.close(self._file)
            self._file = None


def header_bytes(entries: Sequence[Entry], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and the padded JSON header of `entries`, laid out in order."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for entry in entries:
        header[entry.name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def read_layout(shards: list[Path]) -> dict[str, tuple[str, tuple[int, ...],
                                                   tuple[Path, int, int]]]:
    """Each tensor's dtype name, shape and bytes in its file, from the files' headers (the
    layout `header_bytes` writes)."""
    found = {}
    for shard in shards:
        with open(shard, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                start, end = entry["data_offsets"]
                found[name] = (entry["dtype"], tuple(entry["shape"]),
                               (shard, 8 + length + start, end - start))
    return found


def _copy_range(source: int, target: int, offset: int, length: int) -> None:
    """Append `length` bytes of `source` from `offset` to `target` inside the kernel."""
    while length:
        try:
            done = os.copy_file_range(source, target, length, offset)
        except OSError:  # a file system without it: through a buffer
            done = os.write(target, os.pread(source, min(length, 1 << 24), offset))
        if done == 0:
            raise OSError(f"source ended {length} bytes early")
        offset, length = offset + done, length - done


def _read_into(source: int, buffer: np.ndarray, offset: int) -> None:
    view = memoryview(buffer)
    while view:
        done = os.preadv(source, [view], offset)
        if done == 0:
            raise OSError(f"source ended {len(view)} bytes early")
        view, offset = view[done:], offset + done


def _write_all(target: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(target, view):]


def _gather(gather: Gather, itemsize: int, source: int, scratch: Scratch) -> int:
    """Gather the kept entries of a stored tensor into `scratch.cut`; their bytes."""
    element = np.dtype(f"<u{itemsize}") if itemsize > 1 else np.dtype(np.uint8)
    stored = scratch.stored(math.prod(gather.shape) * itemsize)
    _read_into(source, stored, gather.offset)
    shape = list(gather.shape)
    shape[gather.dim] = len(gather.index)
    nbytes = math.prod(shape) * itemsize
    cut = scratch.cut(nbytes).view(element).reshape(shape)
    np.take(stored.view(element).reshape(gather.shape), gather.index, axis=gather.dim,
            out=cut, mode="clip")  # indices are in range; "clip" writes `out` unbuffered
    return nbytes


def write_streamed(path: Path, entries: Sequence[Entry], metadata: Mapping[str, str], *,
                   scratch: Scratch) -> int:
    """Write `entries` to `path` as one safetensors file; returns the bytes of tensor data."""
    sources: dict[Path, int] = {}

    def opened(file: Path) -> int:
        if file not in sources:
            sources[file] = os.open(file, os.O_RDONLY)
        return sources[file]

    try:
        with open(path, "wb", buffering=0) as handle:
            target = handle.fileno()
            _write_all(target, header_bytes(entries, metadata))
            for entry in entries:
                if entry.ranges:
                    if sum(length for _, _, length in entry.ranges) != entry.nbytes:
                        raise RuntimeError(f"{entry.name}: its source ranges do not hold "
                                           f"{entry.nbytes} bytes")
                    for file, offset, length in entry.ranges:
                        _copy_range(opened(file), target, offset, length)
                elif entry.gather is not None:
                    scratch.send(target, _gather(entry.gather, ITEMSIZE[entry.dtype],
                                                 opened(entry.gather.file), scratch))
                else:
                    _write_all(target, _produced(entry))
    finally:
        for descriptor in sources.values():
            os.close(descriptor)
    return sum(entry.nbytes for entry in entries)


def _produced(entry: Entry) -> np.ndarray:
    array = np.ascontiguousarray(entry.produce())
    if array.shape != entry.shape or array.nbytes != entry.nbytes:
        raise RuntimeError(f"{entry.name}: produced {array.dtype} {list(array.shape)}, "
                           f"expected {entry.dtype} {list(entry.shape)}")
    return array.reshape(-1).view(np.uint8)
