"""A model's shape from its `config.json` alone — never its weights, never torch.

`expc check` needs layer counts, head counts and which module roles exist to check a spec
against a model; reading a 2 kB JSON file keeps that a millisecond. Every architecture's
modules are named by the role they play in Hugging Face's Llama (docs/language.md lists
the mapping), so `mlp.down_proj` means the same thing for OLMo2 and BERT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from expc.spec.builtin_models import BUILTIN_CONFIGS
from expc.spec.diagnostics import Span, fail
from expc.spec.json_files import read_json_object
from expc.spec.suggest import did_you_mean
from expc.spec.vocabulary import BUILTIN_PREFIX

_LLAMA_LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# BERT: attention.self.{query,key,value} -> self_attn.{q,k,v}_proj, attention.output.dense ->
# self_attn.o_proj, intermediate.dense -> mlp.up_proj, output.dense -> mlp.down_proj,
# attention.output.LayerNorm -> post_attention_layernorm, output.LayerNorm ->
# post_feedforward_layernorm. No gate, no norm before attention.
_BERT_LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.up_proj", "mlp.down_proj")

# model_type -> (linear roles, norm roles)
MODULE_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llama": (_LLAMA_LINEAR, ("input_layernorm", "post_attention_layernorm")),
    "mistral": (_LLAMA_LINEAR, ("input_layernorm", "post_attention_layernorm")),
    "qwen2": (_LLAMA_LINEAR, ("input_layernorm", "post_attention_layernorm")),
    "olmo2": (_LLAMA_LINEAR, ("post_attention_layernorm", "post_feedforward_layernorm",
                              "self_attn.q_norm", "self_attn.k_norm")),
    "bert": (_BERT_LINEAR, ("post_attention_layernorm", "post_feedforward_layernorm")),
}
SUPPORTED_MODEL_TYPES = tuple(MODULE_ROLES)
ATTENTION_OUTPUT = "self_attn.o_proj"
ALL_ROLES = tuple(dict.fromkeys(r for lin, norm in MODULE_ROLES.values() for r in (*lin, *norm)))
ALL_NORM_ROLES = tuple(dict.fromkeys(r for _, norm in MODULE_ROLES.values() for r in norm))


@attrs.frozen(kw_only=True)
class ModelShape:
    model_type: str
    architecture: str  # e.g. "LlamaForCausalLM"
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    linear_modules: tuple[str, ...]
    norm_modules: tuple[str, ...]
    config: dict = attrs.field(eq=False, repr=False, hash=False)

    @property
    def modules(self) -> tuple[str, ...]:
        return self.linear_modules + self.norm_modules


def read_model_shape(model: str, *, span: Span) -> ModelShape:
    """The shape of `builtin:NAME` or of the checkpoint folder `model` (relative to the cwd).

    Problems are diagnostics at `span`, the spec's `model = ...` value.
    """
    if model.startswith(BUILTIN_PREFIX):
        name = model[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_CONFIGS:
            raise fail(span, f"unknown built-in model `{name}`", code="model",
                       help=did_you_mean(name, BUILTIN_CONFIGS, prefix=BUILTIN_PREFIX)
                       or (f"built-in models: "
                           f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_CONFIGS)}",))
        return shape_from_config(BUILTIN_CONFIGS[name], span=span, source=model)
    folder = Path(model)
    config_path = folder / "config.json"
    if not os.path.isdir(folder):  # unlike Path.is_dir, never raises (long names, NUL bytes)
        raise fail(span, f"model folder `{model}` does not exist", code="model",
                   help=("paths resolve against the working directory; use `--no-model` where "
                         "checkpoints are absent",))
    if not os.path.isfile(config_path):
        raise fail(span, f"model folder `{model}` has no config.json", code="model")
    config = read_json_object(config_path, what=f"the model's {config_path.name}", code="model")
    return shape_from_config(config, span=span, source=str(config_path))


def shape_from_config(config: dict[str, Any], *, span: Span, source: str) -> ModelShape:
    model_type = config.get("model_type")
    if model_type not in MODULE_ROLES:
        raise fail(span, f"unsupported model_type `{model_type}` in {source}", code="model",
                   help=(f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}",))

    def positive_int(key: str, default: int | None = None) -> int:
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(span, f"{source}: `{key}` must be a positive integer, found {value!r}",
                       code="model")
        return value

    n_heads = positive_int("num_attention_heads")
    hidden = positive_int("hidden_size")
    linear, norms = MODULE_ROLES[model_type]
    architectures = config.get("architectures") or [model_type]
    return ModelShape(
        model_type=model_type, architecture=str(architectures[0]),
        n_layers=positive_int("num_hidden_layers"), hidden=hidden, n_heads=n_heads,
        n_kv_heads=positive_int("num_key_value_heads", n_heads),
        head_dim=positive_int("head_dim", hidden // n_heads if hidden % n_heads == 0 else None),
        intermediate=positive_int("intermediate_size"), vocab=positive_int("vocab_size"),
        linear_modules=linear, norm_modules=norms, config=config,
    )
