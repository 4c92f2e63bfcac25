"""Where each family's checkpoint keeps our parameters: the one home of checkpoint names.

expc names every parameter as Llama does (`layers.3.mlp.down_proj.weight`, contracts §1).
Per `model_type`, `CheckpointNames` gives the checkpoint keys that may hold one of our
parameters (most likely first) and, for a tensor stored fused or transposed, the
`CheckpointPart` of it that is ours (`expc.models.fused_checkpoint`). The loader reads
through them (`Architecture.checkpoint_keys` / `checkpoint_part`); `expc prune` maps a
checkpoint's keys back onto our parameters with them. Nothing here imports torch, so
`expc prune`, which only rewrites files, never does.

    family        our `layers.L.mlp.down_proj.weight` is stored as
    Llama & co.   model.layers.L.mlp.down_proj.weight (or bare, for base-model saves)
    BERT          encoder.layer.L.output.dense.weight (or under `bert.`; TF's gamma/beta)
    GPT-2         transformer.h.L.mlp.c_proj.weight, a Conv1D `[in, out]`: transposed
    GPT-NeoX      gpt_neox.layers.L.mlp.dense_4h_to_h.weight
    Phi-3         as Llama; q/k/v and gate/up are row blocks of `qkv_proj` / `gate_up_proj`
    Mixtral       as Llama; `mlp.gate` and `mlp.experts.E.*` under `block_sparse_moe`
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from expc.models.config import ModelConfig
from expc.models.fused_checkpoint import CheckpointPart, consecutive, fused_part, interleaved, whole

QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def unfused(cfg: ModelConfig, name: str) -> CheckpointPart | None:
    """Every parameter is stored exactly as we hold it."""
    return None


@attrs.frozen(kw_only=True)
class CheckpointNames:
    """How one family's checkpoint names our parameters (see the module docstring)."""

    keys: Callable[[str], tuple[str, ...]]  # our name -> candidate checkpoint keys
    part: Callable[[ModelConfig, str], CheckpointPart | None] = unfused


def _layer_module(name: str) -> tuple[str, str, str]:
    """`layers.3.mlp.up_proj.weight` -> (`layers.3.`, `mlp.up_proj`, `weight`); a name
    outside the layers -> (``, ``, name)."""
    if not name.startswith("layers."):
        return "", "", name
    first, layer, rest = name.split(".", 2)
    module, _, param = rest.rpartition(".")
    return f"{first}.{layer}.", module, param


# -- Llama, Mistral, Qwen2, OLMo2, Qwen3, Gemma 2 and 3: our names under `model.` ----------

def decoder_keys(name: str) -> tuple[str, ...]:
    """`layers.3.mlp.down_proj.weight` -> `model.layers.3...` (or bare, for base-model saves)."""
    if name.startswith("lm_head."):
        return (name,)
    return (f"model.{name}", name)


# -- Phi-3: q/k/v and gate/up fused ---------------------------------------------------------

# Our module -> the fused module that holds it.
PHI3_FUSED = {"self_attn.q_proj": "self_attn.qkv_proj", "self_attn.k_proj": "self_attn.qkv_proj",
              "self_attn.v_proj": "self_attn.qkv_proj", "mlp.gate_proj": "mlp.gate_up_proj",
              "mlp.up_proj": "mlp.gate_up_proj"}


def phi3_keys(name: str) -> tuple[str, ...]:
    """Llama's keys, with q/k/v and gate/up read from their fused tensor."""
    prefix, module, param = _layer_module(name)
    return decoder_keys(f"{prefix}{PHI3_FUSED[module]}.{param}" if module in PHI3_FUSED else name)


def phi3_part(cfg: ModelConfig, name: str) -> CheckpointPart | None:
    """q/k/v: consecutive row blocks of `qkv_proj`; gate/up: the halves of `gate_up_proj`."""
    _, module, param = _layer_module(name)
    if module not in PHI3_FUSED:
        return None
    q, kv = cfg.n_attention_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    inner = cfg.intermediate_size
    parts = consecutive({"self_attn.q_proj": q, "self_attn.k_proj": kv, "self_attn.v_proj": kv}
                        if module.startswith("self_attn.") else
                        {"mlp.gate_proj": inner, "mlp.up_proj": inner})
    return fused_part(parts, module, other_dims=() if param == "bias" else (cfg.hidden_size,))


# -- Mixtral: the MoE under `block_sparse_moe` ------------------------------------------------

# Our expert modules -> Mixtral's checkpoint names (w1 = gate, w3 = up, w2 = down).
MIXTRAL_EXPERT_KEYS = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}


def mixtral_keys(name: str) -> tuple[str, ...]:
    """`layers.L.mlp.gate.weight` -> `model.layers.L.block_sparse_moe.gate.weight`,
    `layers.L.mlp.experts.E.down_proj.weight` -> `...block_sparse_moe.experts.E.w2.weight`
    (each also bare, for base-model saves); everything else as for Llama."""
    parts = name.split(".")
    if len(parts) < 4 or parts[0] != "layers" or parts[2] != "mlp":
        return decoder_keys(name)
    inner = parts[3:]
    if inner[0] == "experts":
        inner = [*inner[:2], MIXTRAL_EXPERT_KEYS[inner[2]], *inner[3:]]
    return decoder_keys(".".join([*parts[:2], "block_sparse_moe", *inner]))


# -- BERT ---------------------------------------------------------------------------------

# Our parameter path (after `layers.L.`) -> the BERT checkpoint's (after `encoder.layer.L.`).
BERT_LAYER_KEYS = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.o_proj": "attention.output.dense",
    "post_attention_layernorm": "attention.output.LayerNorm",
    "mlp.up_proj": "intermediate.dense",
    "mlp.down_proj": "output.dense",
    "post_feedforward_layernorm": "output.LayerNorm",
}
BERT_EMBEDDING_KEYS = {
    "word_embeddings": "word_embeddings",
    "position_embeddings": "position_embeddings",
    "token_type_embeddings": "token_type_embeddings",
    "norm": "LayerNorm",
}
# Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
LEGACY_NORM_NAMES = {"weight": "gamma", "bias": "beta"}


def _bert_name(name: str) -> str:
    """One of our parameter names as BertModel saves it (without a `bert.` prefix)."""
    parts = name.split(".")
    if parts[0] == "embed_tokens":
        return ".".join(["embeddings", BERT_EMBEDDING_KEYS[parts[1]], *parts[2:]])
    if parts[0] == "layers":
        module, param = ".".join(parts[2:-1]), parts[-1]
        return f"encoder.layer.{parts[1]}.{BERT_LAYER_KEYS[module]}.{param}"
    raise KeyError(f"no BERT checkpoint name for `{name}`")


def bert_keys(name: str) -> tuple[str, ...]:
    """Where parameter `name` may sit: BertModel saves, `bert.`-prefixed heads, TF names."""
    plain = _bert_name(name)
    candidates = [plain, f"bert.{plain}"]
    stem, _, param = plain.rpartition(".")
    if stem.endswith("LayerNorm") and param in LEGACY_NORM_NAMES:
        legacy = f"{stem}.{LEGACY_NORM_NAMES[param]}"
        candidates += [legacy, f"bert.{legacy}"]
    return tuple(candidates)


# -- GPT-2: Conv1D weights (transposed), q/k/v fused as column thirds of `c_attn` -----------

GPT2_LAYER_KEYS = {
    "input_layernorm": "ln_1", "post_attention_layernorm": "ln_2",
    "self_attn.q_proj": "attn.c_attn", "self_attn.k_proj": "attn.c_attn",
    "self_attn.v_proj": "attn.c_attn", "self_attn.o_proj": "attn.c_proj",
    "mlp.up_proj": "mlp.c_fc", "mlp.down_proj": "mlp.c_proj",
}


def _gpt2_name(name: str) -> str:
    parts = name.split(".")
    if name == "embed_tokens.weight":
        return "wte.weight"
    if name == "embed_tokens.position_embeddings.weight":
        return "wpe.weight"
    if parts[0] == "norm":
        return f"ln_f.{parts[-1]}"
    if parts[0] == "layers":
        return f"h.{parts[1]}.{GPT2_LAYER_KEYS['.'.join(parts[2:-1])]}.{parts[-1]}"
    raise KeyError(f"no GPT-2 checkpoint name for `{name}`")


def gpt2_keys(name: str) -> tuple[str, ...]:
    """GPT2LMHeadModel saves under `transformer.`, GPT2Model without it."""
    if name.startswith("lm_head."):
        return (name,)
    plain = _gpt2_name(name)
    return (f"transformer.{plain}", plain)


def gpt2_part(cfg: ModelConfig, name: str) -> CheckpointPart | None:
    """q/k/v: a third of `c_attn`'s columns; every Conv1D weight transposed."""
    _, module, param = _layer_module(name)
    if module not in GPT2_LAYER_KEYS or "layernorm" in module:
        return None
    hidden = cfg.hidden_size
    if module in QKV:
        thirds = consecutive(dict.fromkeys(QKV, hidden))
        if param == "bias":
            return fused_part(thirds, module)
        return fused_part(thirds, module, other_dims=(hidden,), dim=1, transposed=True)
    if param == "bias":
        return None
    width = {"mlp.up_proj": cfg.intermediate_size}.get(module, hidden)
    fan_in = {"mlp.down_proj": cfg.intermediate_size}.get(module, hidden)
    return whole((width, fan_in), transposed=True)


# -- GPT-NeoX: q/k/v fused per head in `query_key_value` --------------------------------------

NEOX_LAYER_KEYS = {"input_layernorm": "input_layernorm",
                   "post_attention_layernorm": "post_attention_layernorm",
                   "self_attn.q_proj": "attention.query_key_value",
                   "self_attn.k_proj": "attention.query_key_value",
                   "self_attn.v_proj": "attention.query_key_value",
                   "self_attn.o_proj": "attention.dense",
                   "mlp.up_proj": "mlp.dense_h_to_4h", "mlp.down_proj": "mlp.dense_4h_to_h"}
NEOX_NAMES = {"embed_tokens": "embed_in", "norm": "final_layer_norm"}


def _neox_name(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "layers":
        return f"layers.{parts[1]}.{NEOX_LAYER_KEYS['.'.join(parts[2:-1])]}.{parts[-1]}"
    return ".".join([NEOX_NAMES[parts[0]], *parts[1:]])


def neox_keys(name: str) -> tuple[str, ...]:
    """GPTNeoXForCausalLM saves under `gpt_neox.` (its head as `embed_out`), GPTNeoXModel
    without the prefix."""
    if name.startswith("lm_head."):
        return (name.replace("lm_head.", "embed_out.", 1),)
    plain = _neox_name(name)
    return (f"gpt_neox.{plain}", plain)


def neox_part(cfg: ModelConfig, name: str) -> CheckpointPart | None:
    """q/k/v: their rows of each head's `[q | k | v]` block in `query_key_value`."""
    _, module, param = _layer_module(name)
    if module not in QKV:
        return None
    parts = interleaved(cfg.n_attention_heads, dict.fromkeys(QKV, cfg.head_dim))
    return fused_part(parts, module, other_dims=() if param == "bias" else (cfg.hidden_size,))


_DECODER = CheckpointNames(keys=decoder_keys)
CHECKPOINT_NAMES: dict[str, CheckpointNames] = {
    "llama": _DECODER, "mistral": _DECODER, "qwen2": _DECODER, "olmo2": _DECODER,
    "qwen3": _DECODER, "gemma2": _DECODER, "gemma3_text": _DECODER,
    "phi3": CheckpointNames(keys=phi3_keys, part=phi3_part),
    "mixtral": CheckpointNames(keys=mixtral_keys),
    "bert": CheckpointNames(keys=bert_keys),
    "gpt2": CheckpointNames(keys=gpt2_keys, part=gpt2_part),
    "gpt_neox": CheckpointNames(keys=neox_keys, part=neox_part),
}
