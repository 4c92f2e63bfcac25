"""Our parameter as a part of a checkpoint tensor of another shape: the one mechanism for
fused and transposed checkpoint tensors.

expc holds every architecture with Llama's separate modules (`self_attn.q_proj` / `k_proj` /
`v_proj`, `mlp.gate_proj` / `up_proj`) as plain `nn.Linear`s, so every role, site and
importance metric means the same everywhere. Some checkpoints store them otherwise: Phi-3
fuses `qkv_proj` (rows `[q | k | v]`) and `gate_up_proj` (rows `[gate | up]`), GPT-2 stores
Conv1D weights (`[in, out]`, transposed) and fuses q/k/v as column thirds of `c_attn`, and
GPT-NeoX fuses `query_key_value` per head (rows `[head, (q | k | v), head_dim]`).

An architecture names, per parameter, the checkpoint tensor that holds it
(`checkpoint_keys`, the fused key) and a `CheckpointPart`: that tensor's shape, the entries
along its fused dimension that are ours, in our order, and whether ours is the transpose.
The loader reads through it (`expc.models.loading.take_part`: a contiguous run of rows is a
view, no copy); `expc prune` inverts it with `stored_entries` to cut the fused tensor so
that the pruned checkpoint keeps the same fused layout. A fused tensor of the wrong shape is
the loader's ordinary `checkpoint-shape-mismatch`, naming the fused key and the shape that
config.json implies for it. Indices are numpy arrays: the description needs no torch, so
`expc prune`, which only rewrites files, never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np


@attrs.frozen(kw_only=True, eq=False)
class CheckpointPart:
    """Our parameter = entries `index` (in that order; None: all) along dimension `dim` of a
    checkpoint tensor of shape `stored_shape`, transposed when `transposed` (Conv1D)."""

    stored_shape: tuple[int, ...]
    index: np.ndarray | None = None  # [K] int64
    dim: int = 0
    transposed: bool = False

    def stored_dim(self, dim: int) -> int:
        """The stored tensor's dimension that is our parameter's dimension `dim`."""
        return len(self.stored_shape) - 1 - dim if self.transposed else dim

    def stored_entries(self, dim: int, kept: np.ndarray | None) -> np.ndarray:
        """The entries along `stored_dim(dim)` that our entries `kept` (along our `dim`; None:
        all) are read from."""
        if self.index is None or self.stored_dim(dim) != self.dim:
            return np.arange(self.stored_shape[self.stored_dim(dim)]) if kept is None else kept
        return self.index if kept is None else self.index[kept]


def whole(shape: Sequence[int], *, transposed: bool = False) -> CheckpointPart:
    """The whole stored tensor (of our parameter's `shape`), transposed when asked."""
    stored = tuple(reversed(tuple(shape))) if transposed else tuple(shape)
    return CheckpointPart(stored_shape=stored, transposed=transposed)


def consecutive(sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Part name -> its entries, for parts stored one after another (`[q | k | v]`)."""
    found, start = {}, 0
    for name, size in sizes.items():
        found[name] = np.arange(start, start + size)
        start += size
    return found


def interleaved(n_groups: int, sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Part name -> its entries, for `n_groups` groups each holding every part in turn
    (GPT-NeoX's `[head, (q | k | v), head_dim]`)."""
    width = sum(sizes.values())
    return {name: (np.arange(n_groups)[:, None] * width + index).reshape(-1)
            for name, index in consecutive(sizes).items()}


def fused_part(parts: Mapping[str, np.ndarray], name: str, *, other_dims: Sequence[int] = (),
               dim: int = 0, transposed: bool = False) -> CheckpointPart:
    """Part `name` of a tensor fused from `parts` along `dim`; `other_dims` are the stored
    tensor's remaining sizes, in order (none for a bias)."""
    total = sum(len(index) for index in parts.values())
    shape = list(other_dims)
    shape.insert(dim, total)
    return CheckpointPart(stored_shape=tuple(shape), index=parts[name], dim=dim,
                          transposed=transposed)
