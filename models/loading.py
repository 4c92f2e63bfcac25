"""`load_model`: a built-in name or a Hugging Face checkpoint folder -> `HydraTransformer`.

The model is built on the `meta` device (no memory) and each parameter is then read from
the checkpoint, cast and moved on its own, so the weights never sit twice in memory. A
model built with `n_layers_built` (a run's `Plan.layers_needed`) has no parameters for the
layers it leaves out, so their tensors are never read: a run that captures `resid_out[1]`
of a 32-layer checkpoint reads the embeddings and two layers.

Every head has its own modules (fx paths `heads.{h}.layers.{L}...` stay per head), but a
tensor is read once per checkpoint: heads whose layers come from the same checkpoint hold
the very same `Parameter` objects, so N heads cost one copy of the head layers. The spec's
`hydra { head_models = [...] }` gives head h its layers from its own checkpoint folder
(same architecture and shapes). A missing tensor or a shape mismatch is a diagnostic naming
the file and the tensor (raised by `expc.models.checkpoint`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from expc.models.builtin import builtin_config
from expc.models.checkpoint import load_config
from expc.models.config import ModelConfig
from expc.models.fused_checkpoint import CheckpointPart
from expc.models.hydra import HydraTransformer
from expc.models.hydra_split import HydraSplit
from expc.models.model_source import config_source, is_builtin, open_source
from expc.models.registry import read_config
from expc.spec import ir
from expc.spec.diagnostics import fail
from expc.spec.run_format import split_head_prefix
from expc.spec import vocabulary

log = logging.getLogger(__name__)

# The language's dtype words (`expc.spec.vocabulary.DTYPES`) are torch's own names.
DTYPES = {name: getattr(torch, name) for name in vocabulary.DTYPES}


def read_model_config(ref: str | Path) -> ModelConfig:
    """The `ModelConfig` of `builtin:NAME` or a checkpoint folder, from `config.json` alone
    (the layer count a plan needs before the model is built: `load_model`'s
    `n_layers_built`)."""
    raw = builtin_config(str(ref)) if is_builtin(str(ref)) else load_config(ref)
    return read_config(raw, source=config_source(ref))


def _checkpoint_key(checkpoint, candidates: tuple[str, ...]) -> str:
    """The first candidate the checkpoint holds (else the first, so its error names it)."""
    return next((key for key in candidates if key in checkpoint), candidates[0])


def take_part(part: CheckpointPart, stored: torch.Tensor, *,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """Our parameter's tensor from the stored one, cast to `dtype` after the cut (so only
    our part is copied); a run of rows stays a view of the stored tensor."""
    if part.index is not None:
        first, count = int(part.index[0]), len(part.index)
        if bool((part.index == np.arange(first, first + count)).all()):
            stored = stored.narrow(part.dim, first, count)
        else:
            stored = stored.index_select(part.dim, torch.from_numpy(part.index))
    ours = stored.T if part.transposed else stored
    return (ours if dtype is None or ours.dtype == dtype else ours.to(dtype)).contiguous()


def _set_parameter(model: nn.Module, name: str, parameter: nn.Parameter) -> None:
    owner_path, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    setattr(owner, attr, parameter)


def materialize(model: HydraTransformer, checkpoint, *, dtype: torch.dtype, device,
                head_checkpoints: Mapping[int, object] | None = None) -> HydraTransformer:
    """Replace every meta parameter with its checkpoint tensor, one tensor at a time.

    Head h's layers come from `head_checkpoints[h]` when given, else from `checkpoint`. Each
    checkpoint tensor is read once and becomes one `Parameter`, set in every module that
    takes it (the heads reading the same checkpoint share it).
    """
    head_checkpoints = head_checkpoints or {}
    loaded: dict[tuple[int, str], nn.Parameter] = {}  # (id(checkpoint), name without head) ->
    for name, param in list(model.named_parameters()):
        head, base_name = split_head_prefix(name)
        source = checkpoint if head is None else head_checkpoints.get(head, checkpoint)
        parameter = loaded.get((id(source), base_name))
        if parameter is None:
            key = _checkpoint_key(source, model.arch.checkpoint_keys(base_name))
            part = model.arch.checkpoint_part(model.config, base_name)
            source.expect_shape(key, param.shape if part is None else part.stored_shape)
            tensor = (source.get_tensor(key, dtype=dtype) if part is None
                      else take_part(part, source.get_tensor(key), dtype=dtype)).to(device)
            parameter = loaded[id(source), base_name] = nn.Parameter(tensor, requires_grad=False)
        _set_parameter(model, name, parameter)
    model.tie_weights()
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"tensors left unloaded on the meta device: {leftover}")
    return model.eval()


def meta_model(ref: str | Path, hydra: ir.Hydra | None = None,
               interventions: Iterable[ir.Intervention] = ()) -> HydraTransformer:
    """The model `ref` split as `hydra` asks, built on the meta device: no weights read."""
    return _build_on_meta(open_source(ref), hydra, interventions, source=config_source(ref))


def _build_on_meta(checkpoint, hydra: ir.Hydra | None, interventions: Iterable[ir.Intervention],
                   *, source: str, n_layers_built: int | None = None) -> HydraTransformer:
    config = read_config(checkpoint.config, source=source)
    split = HydraSplit.of(hydra, n_layers=config.n_layers, interventions=interventions, source=source)
    return HydraTransformer.build(config, split, init_device="meta", n_layers_built=n_layers_built)


def _same_model(ref: str | Path) -> str:
    """One name per model reference, so two spellings of a folder open it once."""
    return str(ref) if is_builtin(str(ref)) else str(Path(ref).resolve())


def open_head_models(ref: str | Path, checkpoint, head_models: Iterable[str], *,
                     model_type: str) -> dict[int, object]:
    """Head index -> the checkpoint its layers come from; one opened checkpoint per folder.

    A folder that is `ref` itself is `checkpoint`; another folder must hold a model of the
    same architecture (its tensors' shapes are checked as they are read).
    """
    opened = {_same_model(ref): checkpoint}
    sources = {}
    for head, folder in enumerate(head_models):
        name = _same_model(folder)
        if name not in opened:
            opened[name] = open_source(folder)
            other = read_config(opened[name].config, source=config_source(folder))
            if other.model_type != model_type:
                raise fail(config_source(folder), f"head_models[{head}] `{folder}` is a "
                           f"{other.model_type} model but `{ref}` is a {model_type} model",
                           code="checkpoint-architecture",
                           help=("every head's checkpoint must have the model's architecture",))
        sources[head] = opened[name]
    return sources


def load_model(ref: str | Path, *, hydra: ir.Hydra | None = None,
               interventions: Iterable[ir.Intervention] = (),
               dtype: torch.dtype | str = torch.float32,
               device: str | torch.device = "cpu",
               n_layers_built: int | None = None) -> HydraTransformer:
    """Load `builtin:NAME` or a checkpoint folder as a `HydraTransformer` in eval mode.

    `hydra` is the spec's `hydra` block (`ir.Hydra(trunk=..., heads=..., head_models=...)`;
    none: no split); `interventions` resolve `trunk = auto`. Heads without `head_models`
    share the model's layer weights. `n_layers_built` (a plan's `layers_needed`) builds and
    reads only the embeddings and the first that many layers (`HydraTransformer.truncated`);
    None, the whole model.
    """
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    checkpoint = open_source(ref)
    model = _build_on_meta(checkpoint, hydra, tuple(interventions), source=config_source(ref),
                           n_layers_built=n_layers_built)
    head_models = () if hydra is None else hydra.head_models
    others = open_head_models(ref, checkpoint, head_models, model_type=model.config.model_type)
    log.info("loading %s (%s, %d layers, trunk %d, %d heads)%s", ref, model.config.model_type,
             model.config.n_layers, model.hydra.trunk, model.hydra.n_heads,
             f": only the first {model.n_layers_built} are read" if model.truncated else "")
    return materialize(model, checkpoint, dtype=dtype, device=device, head_checkpoints=others)
