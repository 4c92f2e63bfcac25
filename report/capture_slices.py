"""Read a stored capture a slice of samples at a time, its `full` mask beside each slice.

A `full` capture can be far larger than memory (`[N, S, V]` logits), so every section that
reduces captures per sample reads them through here: `RunFolder.chunks` of about
`run_folder.CHUNK_ELEMENTS` values each, paired with the same rows of `{key}.mask` when the
capture has one. A `dataset_mean` vector or a scalar has no sample axis and comes whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

from expc.report.run_folder import RunFolder
from expc.spec.run_format import MASK_SUFFIX


def masked_slices(folder: RunFolder,
                  key: str) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """`(value [n, ...], mask [n, S] or None)` for consecutive slices of samples of `key`;
    one `(value, None)` for a tensor without a sample axis (`dataset_mean` `[*F]`)."""
    shape, _ = folder.layout[key]
    if len(shape) < 2:
        yield folder.tensor(key), None
        return
    rows, mask_key = folder.rows_per_chunk(key), key + MASK_SUFFIX
    masks = (folder.chunks(mask_key, rows) if mask_key in folder.layout
             else itertools.repeat(None))
    yield from zip(folder.chunks(key, rows), masks)
