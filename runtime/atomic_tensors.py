"""A safetensors file written atomically (`expc.runtime.atomic`'s temporary file, fsync,
rename), from tensors anywhere: moved to contiguous CPU memory and un-aliased first."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from expc.runtime.atomic import fsync_path, replacing


def save_safetensors_atomic(path: str | Path, tensors: Mapping[str, torch.Tensor],
                            metadata: Mapping[str, str] | None = None, *,
                            sync_folder: bool = True) -> None:
    """Save tensors (moved to contiguous CPU, un-aliased) as a safetensors file atomically.

    `sync_folder=False` leaves the folder's fsync to the caller (`fsync_folder`), which
    batches it over many files: each file is still complete on disk before its name is, so
    a crash loses at most a rename, never leaves a torn file under the name."""
    ready = _standalone_cpu(tensors)
    with replacing(Path(path), sync_folder=sync_folder) as temp:
        save_file(ready, str(temp), metadata=dict(metadata) if metadata else None)
        fsync_path(temp)


def _standalone_cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors that share no memory (safetensors refuses aliased tensors)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{key!r} is a {type(tensor).__name__}, not a tensor")
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.nbytes:
            t = t.clone()
        if t.nbytes:
            seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out
