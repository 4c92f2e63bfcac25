"""`load_model`: a built-in name or a Hugging Face checkpoint folder -> `HydraTransformer`.

The model is built on the `meta` device (no memory) and each parameter is then read from
the checkpoint, cast and moved on its own, so the weights never sit twice in memory. Head
layers are clones of the checkpoint's layers (each head its own copy), or come from another
checkpoint folder per head. A missing tensor or a shape mismatch is a diagnostic naming
the file and the tensor (raised by `expc.models.checkpoint`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from expc.models.builtin import is_builtin, open_builtin
from expc.models.checkpoint import open_checkpoint
from expc.models.hydra import HydraTransformer
from expc.models.hydra_split import HydraSplit
from expc.models.registry import read_config
from expc.spec import ir
from expc.spec.run_format import split_head_prefix
from expc.spec import vocabulary

log = logging.getLogger(__name__)

# The language's dtype words (`expc.spec.vocabulary.DTYPES`) are torch's own names.
DTYPES = {name: getattr(torch, name) for name in vocabulary.DTYPES}


def open_source(ref: str | Path):
    """The checkpoint behind a model reference: `builtin:NAME` or a local folder."""
    return open_builtin(str(ref)) if is_builtin(str(ref)) else open_checkpoint(ref)


def config_source(ref: str | Path) -> str:
    """Where diagnostics about a model's config point."""
    return str(ref) if is_builtin(str(ref)) else str(Path(ref) / "config.json")


def _checkpoint_key(checkpoint, candidates: tuple[str, ...]) -> str:
    """The first candidate the checkpoint holds (else the first, so its error names it)."""
    return next((key for key in candidates if key in checkpoint), candidates[0])


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_path, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    setattr(owner, attr, nn.Parameter(tensor, requires_grad=False))


def materialize(model: HydraTransformer, checkpoint, *, dtype: torch.dtype, device,
                head_checkpoints: Mapping[int, object] | None = None) -> HydraTransformer:
    """Replace every meta parameter with its checkpoint tensor, one tensor at a time."""
    head_checkpoints = head_checkpoints or {}
    for name, param in list(model.named_parameters()):
        head, base_name = split_head_prefix(name)
        source = checkpoint if head is None else head_checkpoints.get(head, checkpoint)
        key = _checkpoint_key(source, model.arch.checkpoint_keys(base_name))
        source.expect_shape(key, param.shape)
        tensor = source.get_tensor(key, dtype=dtype).to(device)
        _set_parameter(model, name, tensor)
    model.tie_weights()
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"tensors left unloaded on the meta device: {leftover}")
    return model.eval()


def meta_model(ref: str | Path, hydra: ir.Hydra | None = None) -> HydraTransformer:
    """The model `ref` split as `hydra` asks, built on the meta device: no weights read."""
    return _build_on_meta(open_source(ref), hydra, source=config_source(ref))


def _build_on_meta(checkpoint, hydra: ir.Hydra | None, *, source: str) -> HydraTransformer:
    config = read_config(checkpoint.config, source=source)
    split = HydraSplit.of(hydra, n_layers=config.n_layers, source=source)
    return HydraTransformer.build(config, split, init_device="meta")


def load_model(ref: str | Path, *, hydra: ir.Hydra | None = None,
               dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
               head_checkpoints: Mapping[int, str | Path] | None = None) -> HydraTransformer:
    """Load `builtin:NAME` or a checkpoint folder as a `HydraTransformer` in eval mode.

    `hydra` is the spec's `hydra` block (`ir.Hydra(trunk=..., heads=...)`; none: no split);
    `head_checkpoints` maps a head index to another checkpoint folder whose layers that
    head takes instead of clones.
    """
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    checkpoint = open_source(ref)
    model = _build_on_meta(checkpoint, hydra, source=config_source(ref))
    others = {h: open_source(folder) for h, folder in (head_checkpoints or {}).items()}
    log.info("loading %s (%s, %d layers, trunk %d, %d heads)", ref, model.config.model_type,
             model.config.n_layers, model.hydra.trunk, model.hydra.n_heads)
    return materialize(model, checkpoint, dtype=dtype, device=device, head_checkpoints=others)
