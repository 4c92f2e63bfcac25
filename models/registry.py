"""The architecture registry: `model_type` -> how to build and load that family.

Each architecture module (`llama.py`, `olmo2.py`, `bert.py`) describes itself with one
`Architecture` and calls `register` at import; `HydraTransformer` and the loader only ever
talk to this interface, so adding a family is one new module plus one line in
`ARCHITECTURE_MODULES`, its facts in `expc.spec.model_shape.ARCHITECTURES` and its
checkpoint names in `expc.models.checkpoint_names` (torch-free: `expc prune` reads them). `read_config` is the one way from a `config.json` dict to a
`ModelConfig`: the architecture decides how its config is read, so that lookup lives here
and `expc.models.config` (which this module imports) knows nothing of the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

import attrs
from torch import nn

from expc.models.checkpoint_names import CHECKPOINT_NAMES
from expc.models.config import ModelConfig
from expc.models.fused_checkpoint import CheckpointPart
from expc.spec.config_fields import ConfigFields
from expc.spec.diagnostics import fail
from expc.spec.model_shape import ARCHITECTURES

# Modules that register an architecture when imported.
ARCHITECTURE_MODULES = ("expc.models.llama", "expc.models.olmo2", "expc.models.qwen3",
                        "expc.models.gemma", "expc.models.bert", "expc.models.phi3",
                        "expc.models.gpt2", "expc.models.gpt_neox", "expc.models.mixtral")


def linear_lm_head(cfg: ModelConfig) -> nn.Module:
    """The plain `lm_head`: hidden states to vocabulary logits, no bias."""
    return nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)


@attrs.frozen(kw_only=True)
class Architecture:
    """How one model family is configured, built and mapped onto its checkpoint keys.

    - `config_from_hf(raw, source)`: the `ModelConfig` of a `config.json` dict.
    - `build_embeddings(cfg)`: a module called as `(input_ids [B, S], position_ids [B, S])`
      returning `[B, S, H]`; it becomes `embed_tokens`.
    - `build_block(cfg, layer, head)`: the block of global `layer` (in Hydra head `head`, or
      None in the trunk), called as `(hidden [B, S, H], ctx: ForwardContext)`.
    - `build_final_norm(cfg)`: the shared final norm (`nn.Identity` when there is none).
    - `build_lm_head(cfg)`: the `lm_head` of a model that has one (an `nn.Linear`, whose
      `weight` the embeddings may tie; Gemma 2's soft-caps the logits it returns).

    Where the family's checkpoint keeps each parameter is `checkpoint_keys` /
    `checkpoint_part`, read from `expc.models.checkpoint_names` (torch-free, so that
    `expc prune` reads it without building a model).
    """

    model_type: str
    hf_architectures: tuple[str, ...]
    causal: bool
    uses_rope: bool
    config_from_hf: Callable[[Mapping, str], ModelConfig]
    build_embeddings: Callable[[ModelConfig], nn.Module]
    build_block: Callable[[ModelConfig, int, int | None], nn.Module]
    build_final_norm: Callable[[ModelConfig], nn.Module]
    build_lm_head: Callable[[ModelConfig], nn.Module] = linear_lm_head

    def checkpoint_keys(self, name: str) -> tuple[str, ...]:
        """Candidate checkpoint keys of one of our parameter names (without the
        `heads.{h}.` prefix), most likely first."""
        return CHECKPOINT_NAMES[self.model_type].keys(name)

    def checkpoint_part(self, cfg: ModelConfig, name: str) -> CheckpointPart | None:
        """How parameter `name` is cut from the checkpoint tensor `checkpoint_keys` names
        (a fused or transposed one), or None when that tensor is the parameter itself."""
        return CHECKPOINT_NAMES[self.model_type].part(cfg, name)

    @property
    def has_lm_head(self) -> bool:
        """Whether it ends in an LM head (the `logits` site): a fact `expc check` needs
        too, so its one home is the spec's architecture table."""
        return ARCHITECTURES[self.model_type].has_lm_head


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    _REGISTRY[arch.model_type] = arch
    return arch


def _load_all() -> dict[str, Architecture]:
    for module in ARCHITECTURE_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def supported() -> tuple[str, ...]:
    """Every supported `model_type`."""
    return tuple(sorted(_load_all()))


def architecture_for(raw: Mapping, *, source: str = "config.json") -> Architecture:
    """The architecture of a `config.json` dict, by `model_type` then `architectures`."""
    registry = _load_all()
    fields = ConfigFields(raw=raw, source=source)
    model_type = fields.word("model_type", default=None)
    if model_type in registry:
        return registry[model_type]
    names = fields.words("architectures")
    for arch in registry.values():
        if any(name in arch.hf_architectures for name in names):
            return arch
    found = model_type or ", ".join(names) or "nothing"
    listed = ", ".join(
        f"{a.model_type} ({', '.join(a.hf_architectures)})" for a in sorted(
            registry.values(), key=lambda a: a.model_type)
    )
    raise fail(fields.where("model_type"), f"unsupported model architecture `{found}`",
               code="model-unsupported", help=(f"supported model types: {listed}",))


def read_config(raw: Mapping, *, source: str = "config.json") -> ModelConfig:
    """A Hugging Face config dict as a `ModelConfig`; an unsupported architecture or a field
    of the wrong type or range is a diagnostic (found by `architectures` alone, the config
    is read as its architecture's `model_type`)."""
    arch = architecture_for(raw, source=source)
    return arch.config_from_hf({**raw, "model_type": arch.model_type}, source)


def architecture_named(model_type: str) -> Architecture:
    """The registered architecture of a `model_type` already known to be supported."""
    return _load_all()[model_type]
