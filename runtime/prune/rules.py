"""How removing units changes a checkpoint: its config fields and each tensor's slice.

Checkpoint keys are mapped onto expc's own parameter names through the architecture's
`checkpoint_keys` (the loader's mapping, so BERT's `intermediate.dense` is `mlp.up_proj`
here exactly as it is there). Per unit kind:

- neurons (kept set I of `intermediate_size`): rows I of `mlp.gate_proj` and `mlp.up_proj`
  (weights and biases), columns I of `mlp.down_proj` (its bias stays);
- KV heads (kept groups G of `num_key_value_heads`, g query heads each): rows of `k_proj`
  and `v_proj` of the heads in G, rows of `q_proj` and columns of `o_proj` of the query heads
  that read them, biases on the output side likewise, `q_norm`/`k_norm` weights that span
  the whole projection (OLMo2's; Qwen3's and Gemma 3's are per head, one `[head_dim]` weight
  shared by every head, and stay whole: `ArchitectureFacts.qk_norm` says which);
  `num_attention_heads` shrinks with them and `head_dim` is written out, since Hugging Face
  derives it from `hidden_size / num_attention_heads` when it is absent;
- layers: every tensor of a removed layer is dropped and the later layers renumbered
  (`layers.{L}.` / BERT's `layer.{L}.`); config lists with one entry per layer
  (`layer_types`) lose the removed entries, and per-layer sliding windows that a Qwen2
  config derives from `max_window_layers` are written out as `layer_types`.

A checkpoint tensor that holds several of our parameters, or holds one transposed (Phi-3's
`qkv_proj` / `gate_up_proj`, GPT-2's Conv1D `c_attn`, GPT-NeoX's per-head `query_key_value`),
is cut through the loader's own `CheckpointPart` of each parameter it holds
(`expc.models.fused_checkpoint`): each part's kept entries are mapped to the stored tensor's
entries, and the union, in stored order, is kept, so the pruned tensor has the same fused
layout for the smaller config. Config fields are written under the family's own names
(GPT-2's `n_inner`, `n_layer`).

Three pairings cannot give an ordinary checkpoint whose outputs equal the zeroed original:
BERT, GPT-2 and GPT-NeoX derive their head size from `hidden_size / num_attention_heads`, so
fewer heads would change the size of the rest (refused); OLMo2's `q_norm`/`k_norm`
normalise the whole projection, over all heads at once, so the kept heads' norm changes
(allowed, said in a warning and in `expc_prune.json`); Mixtral's MLP neurons sit in its
experts, which no metric scores yet (refused: the architecture has no `mlp.down_proj`,
`ArchitectureFacts.missing_module` says why). Its KV heads and layers prune as Mistral's: the experts' tensors (the checkpoint's
`block_sparse_moe.*`) are kept whole, or dropped and renumbered with their layer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import attrs
import numpy as np

from expc.models.checkpoint_names import CHECKPOINT_NAMES
from expc.models.config import ModelConfig
from expc.models.fused_checkpoint import CheckpointPart, whole
from expc.models.sliding_windows import sliding_windows
from expc.runtime.prune.scores import Selection
from expc.runtime.prune.units import CODE, UnitKind
from expc.spec.diagnostics import fail
from expc.spec.model_shape import ARCHITECTURES

log = logging.getLogger(__name__)

# model.layers.3. / encoder.layer.3. / GPT-2's transformer.h.3.
LAYER_IN_KEY = re.compile(r"(?:^|\.)(?:layers?|h)\.(\d+)\.")
# Per unit kind: module -> (the weight's dimension that loses units, which index set).
# `q_norm`/`k_norm` lose entries only where they span the whole projection (`_width_rules`).
WIDTH_RULES = {
    "neurons": {"mlp.gate_proj": (0, "units"), "mlp.up_proj": (0, "units"),
                "mlp.down_proj": (1, "units")},
    "kv_heads": {"self_attn.q_proj": (0, "q"), "self_attn.k_proj": (0, "kv"),
                 "self_attn.v_proj": (0, "kv"), "self_attn.o_proj": (1, "q"),
                 "self_attn.q_norm": (0, "q"), "self_attn.k_norm": (0, "kv")},
}
# Families whose Hugging Face class derives the head size from hidden_size / heads.
HEAD_SIZE_FROM_HIDDEN = {"bert": "BERT", "gpt2": "GPT-2", "gpt_neox": "GPT-NeoX"}
QK_NORMS = ("self_attn.q_norm", "self_attn.k_norm")
WHOLE_PROJECTION_NORM = ("q_norm/k_norm normalise over all heads together, so the kept heads "
                         "are normalised over fewer channels than before: outputs are close "
                         "to, not equal to, the original with the same heads zeroed")


@attrs.frozen(kw_only=True)
class Slice:
    """One output tensor: its key, and the kept indices along one dimension (or all)."""

    key: str
    dim: int | None = None
    index: np.ndarray | None = None  # [K] int64

    def shape(self, source: tuple[int, ...]) -> tuple[int, ...]:
        if self.dim is None:
            return source
        return tuple(len(self.index) if d == self.dim else n for d, n in enumerate(source))

    def apply(self, tensor):
        """The kept part of a whole tensor (numpy or torch: indexed alike)."""
        return tensor if self.dim is None else tensor[(slice(None),) * self.dim + (self.index,)]


def check_supported(model_type: str, kind: UnitKind, *, metric: str,
                    where: str) -> str | None:
    """Refuse what cannot be an ordinary checkpoint (before a score is read); the note of an
    inexact result."""
    absent = ARCHITECTURES[model_type].missing_module(kind.module)
    if absent is not None:  # Mixtral's neurons sit in its experts, which no metric scores yet
        raise fail(where, f"`{model_type}` checkpoints cannot lose "
                   f"{kind.name.replace('_', ' ')} by `{metric}` at `{kind.module}`: {absent}, "
                   "so the experts' neurons are not scored yet (metrics at experts are a "
                   "follow-up)", code=CODE,
                   help=(f"prune `{model_type}`'s KV heads (kv_head_contribution) or "
                         "layers (block_influence) instead",))
    family = HEAD_SIZE_FROM_HIDDEN.get(model_type)
    if family is not None and kind.name == "kv_heads":
        raise fail(where, f"{family} checkpoints cannot lose attention heads: Hugging Face's "
                   f"{family} derives its head size from hidden_size / num_attention_heads, so "
                   "fewer heads would resize the others", code=CODE,
                   help=(f"prune {family}'s MLP neurons or layers instead",))
    if kind.name != "kv_heads" or ARCHITECTURES[model_type].qk_norm != "projection":
        return None
    note = f"{model_type}'s {WHOLE_PROJECTION_NORM}"
    log.warning("%s", note)
    return note


def _width_rules(model_type: str, kind: str) -> dict:
    """`WIDTH_RULES[kind]`, without the QK-norms of a family whose norms work per head."""
    rules = WIDTH_RULES[kind]
    if ARCHITECTURES[model_type].qk_norm == "per_head":  # one [head_dim] weight for every head
        return {module: rule for module, rule in rules.items() if module not in QK_NORMS}
    return rules


def _kept(total: int, removed: tuple[int, ...]) -> np.ndarray:
    return np.delete(np.arange(total, dtype=np.int64), list(removed))


def _index_sets(cfg: ModelConfig, selection: Selection, layer: int) -> dict[str, np.ndarray]:
    kept = _kept(selection.total, selection.removed[layer])  # [K]
    if selection.kind.name == "neurons":
        return {"units": kept}
    d, g = cfg.head_dim, cfg.kv_groups
    kv = (kept[:, None] * d + np.arange(d)).reshape(-1)  # channels of the kept KV heads
    heads = (kept[:, None] * g + np.arange(g)).reshape(-1)  # the query heads reading them
    q = (heads[:, None] * d + np.arange(d)).reshape(-1)
    return {"kv": kv, "q": q}


@attrs.frozen(kw_only=True)
class Owner:
    """One of our parameters read from a checkpoint tensor: its layer, name (without
    `layers.{L}.`) and how it is cut from that tensor."""

    layer: int
    name: str
    part: CheckpointPart


def layer_parameter_keys(model_type: str, cfg: ModelConfig,
                         shapes: Mapping[str, tuple[int, ...]]) -> dict[str, list[Owner]]:
    """Checkpoint key -> the parameters read from it (several for a fused tensor), for the
    keys the checkpoint holds (`shapes`: each key's stored shape). The parameters are the
    weights and biases of every module role the architecture has (the spec's facts, the list
    `expc check` knows), named through the loader's own `checkpoint_names`; a test holds
    them to the parameters of each family's built block."""
    facts, names = ARCHITECTURES[model_type], CHECKPOINT_NAMES[model_type]
    found: dict[str, list[Owner]] = {}
    for layer in range(cfg.n_layers):
        for module in (*facts.linear_modules, *facts.norm_modules):
            for param in ("weight", "bias"):
                name = f"{module}.{param}"
                full = f"layers.{layer}.{name}"
                key = next((k for k in names.keys(full) if k in shapes), None)
                if key is not None:
                    part = names.part(cfg, full) or whole(shapes[key])
                    found.setdefault(key, []).append(Owner(layer=layer, name=name, part=part))
    return found


def _cut(owners: list[Owner], rules: dict, sets: dict) -> tuple[int | None, np.ndarray | None]:
    """The stored dimension and kept entries of a tensor its `owners` are read from."""
    dims, kept = set(), []
    for owner in owners:
        module, _, param = owner.name.rpartition(".")
        dim, which = rules.get(module, (None, None))
        if dim is not None and (param != "bias" or dim == 0):
            dims.add(owner.part.stored_dim(dim))
            kept.append((owner, dim, sets[owner.layer][which]))
    if not dims:
        return None, None
    (stored,) = dims  # every rule cuts one dimension of a tensor
    entries = [owner.part.stored_entries(dim, index) for owner, dim, index in kept]
    entries += [owner.part.stored_entries(stored, None) for owner in owners
                if owner not in {k[0] for k in kept} and owner.part.dim == stored]
    return stored, np.unique(np.concatenate(entries))


def width_slices(cfg: ModelConfig, selection: Selection,
                 shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Slice]:
    """Every checkpoint key's output slice when neurons or KV heads go."""
    rules = _width_rules(cfg.model_type, selection.kind.name)
    owners = layer_parameter_keys(cfg.model_type, cfg, shapes)
    sets = {layer: _index_sets(cfg, selection, layer) for layer in range(cfg.n_layers)}
    slices = {}
    for key in shapes:
        dim, index = _cut(owners.get(key, []), rules, sets)
        slices[key] = Slice(key=key, dim=dim, index=index)
    return slices


def layer_slices(selection: Selection, keys: list[str]) -> dict[str, Slice]:
    """Every kept checkpoint key's output name when whole layers go (renumbered)."""
    gone = set(selection.removed_layers)
    renumber = {old: new for new, old in enumerate(
        layer for layer in range(selection.total) if layer not in gone)}
    slices = {}
    for key in keys:
        match = LAYER_IN_KEY.search(key)
        if match is None:
            slices[key] = Slice(key=key)
        elif int(match.group(1)) in renumber:
            start, end = match.span(1)
            slices[key] = Slice(key=f"{key[:start]}{renumber[int(match.group(1))]}{key[end:]}")
    return slices


def slices_for(cfg: ModelConfig, selection: Selection,
               shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Slice]:
    """Checkpoint key (with its stored shape) -> its output tensor; keys that are dropped
    are absent."""
    if selection.kind.name == "layers":
        return layer_slices(selection, list(shapes))
    return width_slices(cfg, selection, shapes)


def pruned_config(raw: Mapping, cfg: ModelConfig, selection: Selection, *, source: str) -> dict:
    """`config.json` of the pruned checkpoint."""
    out = dict(raw)
    names = ARCHITECTURES[cfg.model_type].config_names  # GPT-2's `n_inner`, `n_layer`, ...
    kept = selection.kept
    if selection.kind.name == "neurons":
        out[names.get("intermediate_size", "intermediate_size")] = kept
    elif selection.kind.name == "kv_heads":
        out.update(num_key_value_heads=kept, num_attention_heads=kept * cfg.kv_groups,
                   head_dim=cfg.head_dim)
    else:
        out.update(_without_layers(raw, cfg, selection, source=source))
    return out


def _without_layers(raw: Mapping, cfg: ModelConfig, selection: Selection, *,
                    source: str) -> dict:
    """The config fields that change when whole layers go: the layer count, per-layer
    lists, and per-layer sliding windows written out where the family derives them from the
    layer index (Qwen2's `max_window_layers` counts from layer 0), read as the family's
    config reader reads them (`expc.models.sliding_windows`)."""
    names = ARCHITECTURES[cfg.model_type].config_names
    layers = [layer for layer in range(cfg.n_layers) if layer not in selection.removed_layers]
    out = {names.get("num_hidden_layers", "num_hidden_layers"): selection.kept}
    for field, value in raw.items():
        if isinstance(value, list) and len(value) == cfg.n_layers:
            out[field] = [value[layer] for layer in layers]
    before = sliding_windows(cfg.model_type, raw, source)
    windows = tuple(before[layer] for layer in layers)
    if sliding_windows(cfg.model_type, {**raw, **out}, source) != windows:  # e.g. Qwen2's
        out["layer_types"] = ["full_attention" if w is None else "sliding_attention"
                              for w in windows]  # max_window_layers counts from layer 0
    return out
