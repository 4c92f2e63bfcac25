"""How much memory a model would take, from its shape alone — to refuse absurd sizes early.

`heads = 1000000` or a config with 200 000 layers used to hang a run in `running` while it
built millions of modules. `expc check` (and the run, whose spec load runs the same checks)
estimates the weights (parameters x dtype bytes: one copy the heads share, or each head's own
with `head_models`) plus the bookkeeping of each layer copy, and compares it with the machine's memory, read
without torch.
"""

from __future__ import annotations

import os

from expc.spec import ir
from expc.spec.model_shape import ModelShape

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LAYER_OVERHEAD = 256 << 10  # bytes of modules, graph nodes and tensors' headers per layer copy
GIB = 1 << 30


def layer_parameters(shape: ModelShape) -> int:
    """Parameters of one transformer layer: attention, MLP and norms (weights and biases)."""
    inner, kv = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    attention = 2 * shape.hidden * inner + 2 * shape.hidden * kv
    return attention + shape.mlp_parameters + 2 * shape.hidden * len(shape.norm_modules)


def layer_copies(shape: ModelShape, hydra: ir.Hydra | None, trunk: int) -> int:
    """Layer modules built: the trunk (`trunk` resolved, `auto` included) once, then each
    head's own copy of the rest."""
    if hydra is None or trunk >= shape.n_layers:
        return shape.n_layers
    return trunk + hydra.heads * (shape.n_layers - trunk)


def weight_layers(shape: ModelShape, hydra: ir.Hydra | None, trunk: int) -> int:
    """Layers whose weights are held: heads share the model's, unless `head_models` gives
    each head its own."""
    if hydra is not None and hydra.head_models:
        return layer_copies(shape, hydra, trunk)
    return shape.n_layers


def model_bytes(shape: ModelShape, *, hydra: ir.Hydra | None, trunk: int, dtype: str) -> int:
    """The memory the model would take: weights in `dtype` and per-layer bookkeeping."""
    embeddings = shape.vocab * shape.hidden
    lm_head = embeddings if shape.facts.has_lm_head and not shape.tie_word_embeddings else 0
    layers = weight_layers(shape, hydra, trunk) * layer_parameters(shape)
    weights = (embeddings + lm_head + layers) * DTYPE_BYTES[dtype]
    return weights + layer_copies(shape, hydra, trunk) * LAYER_OVERHEAD


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
