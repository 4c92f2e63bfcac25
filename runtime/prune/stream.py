"""Write a safetensors file one tensor at a time, reading each from its source as it goes.

`safetensors.torch.save_file` wants every tensor in memory at once (and copies each to
bytes), which for a checkpoint shard is the shard twice over. The format is simple enough
to stream: an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
shape and byte range, padded with spaces to a multiple of 8, then the tensors' bytes back to
back. The header needs only shapes and dtypes, known from the source's header, so each
tensor is read, sliced and written, then freed: peak memory is one tensor, not one shard.
A tensor kept whole, or cut to some of its rows (dim 0), is a few byte ranges of its source
file: those are copied by the kernel (`os.copy_file_range`, what `cp` does), never passing
through Python's memory at all.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import torch

# torch dtype <-> the safetensors header's dtype names.
DTYPE_NAMES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
    torch.int32: "I32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float32: "F32", torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


@attrs.frozen(kw_only=True)
class Entry:
    """One tensor of the file: its name, dtype and shape, and how to produce it."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    produce: Callable[[], torch.Tensor]  # called once, when its bytes are written
    ranges: tuple[tuple[Path, int, int], ...] = ()  # (file, offset, length) to copy instead

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def header_bytes(entries: Sequence[Entry], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and the padded JSON header of `entries`, laid out in order."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for entry in entries:
        header[entry.name] = {"dtype": DTYPE_NAMES[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


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


def _write_all(target: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(target, view):]


def write_streamed(path: Path, entries: Sequence[Entry], metadata: Mapping[str, str]) -> int:
    """Write `entries` to `path` as one safetensors file; returns the bytes of tensor data."""
    sources: dict[Path, int] = {}
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
                        if file not in sources:
                            sources[file] = os.open(file, os.O_RDONLY)
                        _copy_range(sources[file], target, offset, length)
                    continue
                tensor = entry.produce()
                if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
                    raise RuntimeError(f"{entry.name}: produced {tensor.dtype} "
                                       f"{list(tensor.shape)}, expected {entry.dtype} "
                                       f"{list(entry.shape)}")
                _write_all(target, tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
                del tensor
    finally:
        for descriptor in sources.values():
            os.close(descriptor)
    return sum(entry.nbytes for entry in entries)
