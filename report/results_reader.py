"""Result tensors read back from either layout of a run folder, a slice at a time.

A run folder holds its results in one `results.safetensors`, or, when they outgrew
`output { shard_size }`, in shards joined by `results.safetensors.index.json`
(docs/run-folder.md). Both readers here answer the same questions — every key's shape and
dtype (`layout`, from the file's header or the index alone: opening a 100 GB folder reads
kilobytes), one whole tensor (`read`), and rows `[start, stop)` of a per-sample tensor
(`rows`) — and both answer in *data order* (row i is sample i), so a sharded run reads back
exactly as the same run written to one file. In the sharded layout per-sample rows are
stored in run order, each key as pieces `@{first_row}/{key}` (spec/run_format.py), and
`meta/sample_index` names each stored row's sample; `rows` reads, from each piece, only the
run-order span holding the samples asked for (batches are bucketed by length within a
window, so that span stays near the slice's size).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open

from expc.spec.diagnostics import fail
from expc.spec.run_format import (RESULTS, RUN_FOLDER_CODE, SAMPLE_INDEX, read_results_index)

Layout = Mapping[str, tuple[tuple[int, ...], str]]  # key -> (shape, safetensors dtype name)


def _unreadable(path: Path, exc: Exception):
    return fail(path, f"cannot read {path.name}: {exc}", code=RUN_FOLDER_CODE)


@attrs.frozen(kw_only=True)
class SingleFile:
    """`results.safetensors`: every tensor whole, rows in data order."""

    path: Path
    layout: Layout

    @classmethod
    def open(cls, path: Path) -> SingleFile:
        try:
            with safe_open(str(path), framework="pt") as handle:
                layout = {}
                for key in handle.keys():
                    view = handle.get_slice(key)
                    layout[key] = (tuple(view.get_shape()), str(view.get_dtype()))
        except (SafetensorError, OSError, ValueError) as exc:
            raise _unreadable(path, exc) from None
        return cls(path=path, layout=layout)

    def read(self, key: str) -> torch.Tensor:
        with safe_open(str(self.path), framework="pt") as handle:
            return handle.get_tensor(key)

    def read_many(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        with safe_open(str(self.path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in keys}

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        with safe_open(str(self.path), framework="pt") as handle:
            return handle.get_slice(key)[start:stop]


def _padded(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad every dim after the first up to `shape`'s (pieces hold their own longest)."""
    widths: list[int] = []
    for have, want in zip(reversed(tensor.shape[1:]), reversed(shape[1:])):
        widths += [0, want - have]
    return F.pad(tensor, widths) if any(widths) else tensor


@attrs.frozen(kw_only=True)
class Sharded:
    """Shards and their index; per-sample keys' rows in run order, read back in data order."""

    folder: Path
    index: Mapping[str, Mapping]  # the index's `metadata.keys`
    layout: Layout
    _cache: dict = attrs.field(factory=dict, init=False)  # the run order and its inverse

    @classmethod
    def open(cls, path: Path) -> Sharded:
        keys = read_results_index(path)
        layout = {key: (tuple(entry["shape"]), entry["dtype"]) for key, entry in keys.items()}
        return cls(folder=path.parent, index=keys, layout=layout)

    def read(self, key: str) -> torch.Tensor:
        entry = self.index[key]
        if entry.get("order") != "run":
            (piece,) = entry["pieces"]
            return self._slice(piece, None, None)
        shape = tuple(entry["shape"])
        return self.rows(key, 0, shape[0])

    def read_many(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        return {key: self.read(key) for key in keys}

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        entry = self.index[key]
        shape = tuple(entry["shape"])
        if entry.get("order") != "run":  # stored whole: slice it, never read it all
            (piece,) = entry["pieces"]
            return self._slice(piece, start, stop)
        samples, positions = self._order()
        wanted = positions[start:stop]  # the run-order rows holding samples start..stop-1
        out = None
        for piece in entry["pieces"]:
            first, end = piece["rows"]
            inside = (wanted >= first) & (wanted < end)
            if not bool(inside.any()):
                continue
            at = wanted[inside]
            low, high = int(at.min()), int(at.max()) + 1
            part = _padded(self._slice(piece, low - first, high - first), shape)
            if out is None:
                out = part.new_zeros((len(wanted), *shape[1:]))
            out[inside] = part[at - low]
        if out is None:  # no rows asked for
            with safe_open(str(self.folder / entry["pieces"][0]["file"]), framework="pt") as h:
                return h.get_slice(entry["pieces"][0]["name"])[0:0]
        return out

    def _order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stored row's sample (run order) and each sample's stored row."""
        if "order" not in self._cache:
            pieces = sorted(self.index[SAMPLE_INDEX]["pieces"], key=lambda p: p["rows"][0])
            samples = torch.cat([self._slice(p, None, None) for p in pieces])
            positions = torch.empty_like(samples)
            positions[samples] = torch.arange(len(samples), dtype=samples.dtype)
            self._cache["order"] = (samples, positions)
        return self._cache["order"]

    def _slice(self, piece: Mapping, start: int | None, stop: int | None) -> torch.Tensor:
        path = self.folder / piece["file"]
        try:
            with safe_open(str(path), framework="pt") as handle:
                if start is None:
                    return handle.get_tensor(piece["name"])
                return handle.get_slice(piece["name"])[start:stop]
        except (SafetensorError, OSError, ValueError) as exc:
            raise _unreadable(path, exc) from None


def open_results(path: Path | None) -> SingleFile | Sharded | None:
    """The reader for a run folder's results file (`read_run_manifest` found it), or None."""
    if path is None:
        return None
    return SingleFile.open(path) if path.name == RESULTS else Sharded.open(path)


def row_count(layout: Layout, key: str, elements: int) -> int:
    """How many dim-0 rows of `key` make a slice of about `elements` values."""
    shape, _ = layout[key]
    return max(1, elements // max(1, math.prod(shape[1:])))
