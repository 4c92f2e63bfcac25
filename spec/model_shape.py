"""A model's shape from its `config.json` alone — never its weights, never torch.

`expc check` needs layer counts, head counts and which module roles exist to check a spec
against a model; reading a 2 kB JSON file keeps that a millisecond. Every architecture's
modules are named by the role they play in Hugging Face's Llama (docs/language.md lists
the mapping), so `mlp.down_proj` means the same thing for OLMo2 and BERT.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import attrs

from expc.spec.builtin_models import BUILTIN_CONFIGS
from expc.spec.config_fields import REQUIRED, ConfigFields
from expc.spec.diagnostics import Diagnostic, Span, error, fail
from expc.spec.json_files import read_json_object
from expc.spec.suggest import did_you_mean
from expc.spec.vocabulary import (BUILTIN_PREFIX, LAYER_SITES, LM_HEAD_SITES, MLP_POST_SITE,
                                  ROUTER_SITE, SITES)

_ATTENTION_LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.o_proj")
_GATED_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_LLAMA_LINEAR = (*_ATTENTION_LINEAR, *_GATED_MLP)
# BERT: attention.self.{query,key,value} -> self_attn.{q,k,v}_proj, attention.output.dense ->
# self_attn.o_proj, intermediate.dense -> mlp.up_proj, output.dense -> mlp.down_proj,
# attention.output.LayerNorm -> post_attention_layernorm, output.LayerNorm ->
# post_feedforward_layernorm. No gate, no norm before attention.
_BERT_LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.up_proj", "mlp.down_proj")

_DECODER_NORMS = ("input_layernorm", "post_attention_layernorm")


@attrs.frozen(kw_only=True)
class Experts:
    """A sparse mixture of experts in place of the MLP: the router `mlp.gate` picks some of
    `count_field` experts per token, each expert a gated MLP with the modules `roles` as
    `mlp.experts.E.{gate_proj,up_proj,down_proj}`."""

    count_field: str  # the config field with the number of experts
    default_count: int  # Hugging Face's default when the config leaves it out
    roles: tuple[str, ...] = _GATED_MLP


@attrs.frozen(kw_only=True)
class ArchitectureFacts:
    """What is known of an architecture without building it: the one home of these facts
    for `expc check` and for the model code (`expc.models.registry` reads them here)."""

    linear_modules: tuple[str, ...]
    norm_modules: tuple[str, ...]
    has_lm_head: bool  # decoders end in an LM head (`logits`, `lens`); encoders do not
    max_positions: int  # Hugging Face's default `max_position_embeddings`
    # Our config field name -> this family's (GPT-2's `n_embd`), see `ConfigFields.aliases`.
    config_names: Mapping[str, str] = attrs.field(factory=dict)
    # `intermediate_size` = this times `hidden_size` when the config gives none (GPT-2's
    # `n_inner = null`); None: the config must give it.
    mlp_ratio: int | None = None
    experts: Experts | None = None  # a mixture of experts (Mixtral) in place of the MLP
    # What `self_attn.q_norm` / `k_norm` normalise, where the family has them: "per_head", each
    # head's `head_dim` by one `[head_dim]` weight shared by every head (Qwen3, Gemma 3), or
    # "projection", the whole query (key) projection at once (OLMo2).
    qk_norm: str | None = attrs.field(
        default=None, validator=attrs.validators.in_((None, "per_head", "projection")))

    @property
    def sites(self) -> tuple[str, ...]:
        """The capture sites a model of this architecture marks."""
        return tuple(s for s in SITES if self.missing_site(s) is None)

    @property
    def layer_sites(self) -> tuple[str, ...]:
        """The per-layer capture sites of this architecture."""
        return tuple(s for s in self.sites if s in LAYER_SITES)

    def missing_site(self, site: str) -> str | None:
        """Why this architecture has no capture site `site` (None: it has it)."""
        if site in LM_HEAD_SITES and not self.has_lm_head:
            return "an encoder has no LM head"
        if site == ROUTER_SITE and self.experts is None:
            return "only a mixture-of-experts model routes tokens"
        if site == MLP_POST_SITE and self.experts is not None:
            return ("its MLP is a mixture of experts, each with its own neurons computed on "
                    "the tokens routed to it; capture `mlp_out` (the experts' weighted sum) "
                    "or `router`")
        return None

    def missing_module(self, role: str) -> str | None:
        """Why a role that other architectures have is no module here (None: no reason to
        give beyond its absence)."""
        if self.experts is not None and role in self.experts.roles:
            name = role.split(".", 1)[1]
            return (f"its MLP is a mixture of experts, so `{role}` exists once per expert "
                    f"(`mlp.experts.E.{name}`), and metrics and interventions at experts are "
                    "not supported yet")
        return None


ARCHITECTURES: dict[str, ArchitectureFacts] = {
    "llama": ArchitectureFacts(linear_modules=_LLAMA_LINEAR, norm_modules=_DECODER_NORMS,
                               has_lm_head=True, max_positions=2048),
    "mistral": ArchitectureFacts(linear_modules=_LLAMA_LINEAR, norm_modules=_DECODER_NORMS,
                                 has_lm_head=True, max_positions=4096 * 32),
    "qwen2": ArchitectureFacts(linear_modules=_LLAMA_LINEAR, norm_modules=_DECODER_NORMS,
                               has_lm_head=True, max_positions=32768),
    "olmo2": ArchitectureFacts(linear_modules=_LLAMA_LINEAR, norm_modules=(
        "post_attention_layernorm", "post_feedforward_layernorm", "self_attn.q_norm",
        "self_attn.k_norm"), has_lm_head=True, max_positions=2048, qk_norm="projection"),
    "qwen3": ArchitectureFacts(linear_modules=_LLAMA_LINEAR, norm_modules=(
        *_DECODER_NORMS, "self_attn.q_norm", "self_attn.k_norm"), has_lm_head=True,
        max_positions=32768, qk_norm="per_head"),
    # Gemma 2: `post_attention_layernorm` norms attention's output (OLMo2's meaning), the
    # MLP's input and output norms are `pre_` / `post_feedforward_layernorm`.
    "gemma2": ArchitectureFacts(linear_modules=_LLAMA_LINEAR, norm_modules=(
        *_DECODER_NORMS, "pre_feedforward_layernorm", "post_feedforward_layernorm"),
        has_lm_head=True, max_positions=8192),
    "gemma3_text": ArchitectureFacts(linear_modules=_LLAMA_LINEAR, norm_modules=(
        *_DECODER_NORMS, "pre_feedforward_layernorm", "post_feedforward_layernorm",
        "self_attn.q_norm", "self_attn.k_norm"), has_lm_head=True, max_positions=131072,
        qk_norm="per_head"),
    # Phi-3: fused `qkv_proj` / `gate_up_proj` are split into Llama's modules at load time.
    "phi3": ArchitectureFacts(linear_modules=_LLAMA_LINEAR, norm_modules=_DECODER_NORMS,
                              has_lm_head=True, max_positions=4096),
    # GPT-2: fused `c_attn` and Conv1D weights are split and transposed at load time onto
    # the roles (ln_1 -> input_layernorm, ln_2 -> post_attention_layernorm, c_fc -> up_proj).
    "gpt2": ArchitectureFacts(linear_modules=_BERT_LINEAR, norm_modules=_DECODER_NORMS,
                              has_lm_head=True, max_positions=1024, config_names={
                                  "hidden_size": "n_embd", "num_attention_heads": "n_head",
                                  "num_hidden_layers": "n_layer", "intermediate_size": "n_inner",
                                  "max_position_embeddings": "n_positions"}, mlp_ratio=4),
    # GPT-NeoX (Pythia): fused per-head `query_key_value` read as q/k/v at load time, ungated
    # MLP (dense_h_to_4h -> up_proj, dense_4h_to_h -> down_proj), LayerNorms.
    "gpt_neox": ArchitectureFacts(linear_modules=_BERT_LINEAR, norm_modules=_DECODER_NORMS,
                                  has_lm_head=True, max_positions=2048),
    # Mixtral: Mistral's block with a sparse mixture of experts in place of the MLP: the
    # router `mlp.gate` (a Linear) and per expert Llama's gated MLP (`mlp.experts.E.*`).
    "mixtral": ArchitectureFacts(linear_modules=(*_ATTENTION_LINEAR, "mlp.gate"),
                                 norm_modules=_DECODER_NORMS, has_lm_head=True,
                                 max_positions=4096 * 32, experts=Experts(
                                     count_field="num_local_experts", default_count=8)),
    "bert": ArchitectureFacts(linear_modules=_BERT_LINEAR, norm_modules=(
        "post_attention_layernorm", "post_feedforward_layernorm"), has_lm_head=False,
        max_positions=512),
}
SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
ATTENTION_OUTPUT = "self_attn.o_proj"
ALL_ROLES = tuple(dict.fromkeys(r for a in ARCHITECTURES.values()
                                for r in (*a.linear_modules, *a.norm_modules)))
ALL_NORM_ROLES = tuple(dict.fromkeys(r for a in ARCHITECTURES.values() for r in a.norm_modules))


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
    max_positions: int  # `max_position_embeddings`: the longest input the model takes
    tie_word_embeddings: bool
    facts: ArchitectureFacts
    n_experts: int = 1  # a mixture of experts' experts per layer (1: one plain MLP)
    config: dict = attrs.field(eq=False, repr=False, hash=False)

    @property
    def linear_modules(self) -> tuple[str, ...]:
        return self.facts.linear_modules

    @property
    def norm_modules(self) -> tuple[str, ...]:
        return self.facts.norm_modules

    @property
    def modules(self) -> tuple[str, ...]:
        return self.linear_modules + self.norm_modules

    def no_module(self, module: str, span: Span) -> Diagnostic:
        """The error for `module`, no module of this architecture: why, where the
        architecture says (an MoE's expert roles), and the nearest names."""
        why = self.facts.missing_module(module)
        return error(span, f"{self.model_type} models have no `{module}`"
                     + ("" if why is None else f": {why}"), code="module",
                     help=did_you_mean(module, self.modules)
                     or (f"modules: {', '.join(self.modules)}",))

    @property
    def mlp_parameters(self) -> int:
        """Weights of one layer's MLP (every expert's, and the router's, in an MoE)."""
        experts = self.facts.experts
        matrices = len(experts.roles) if experts else (
            3 if "mlp.gate_proj" in self.linear_modules else 2)
        router = self.hidden * self.n_experts if experts else 0
        return self.n_experts * matrices * self.hidden * self.intermediate + router

    def target_width(self, target: str, kind: str) -> int:
        """C, the channels of the value an intervention on `target` edits: a linear module's
        input, a norm's output, a site's last dimension (trailing dims flattened)."""
        q_width, kv_width = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        if kind == "linear":
            return {ATTENTION_OUTPUT: q_width, "mlp.down_proj": self.intermediate}.get(
                target, self.hidden)
        if kind == "norm":
            return {"self_attn.q_norm": q_width, "self_attn.k_norm": kv_width}.get(
                target, self.hidden)
        return {"mlp_post": self.intermediate, "q": q_width, "z": q_width, "k": kv_width,
                "v": kv_width, "values": kv_width}.get(target, self.hidden)


def read_model_shape(model: str, *, span: Span) -> ModelShape:
    """The shape of `builtin:NAME` or of the checkpoint folder `model` (relative to the cwd).

    A missing or unsupported model is a diagnostic at `span`, the spec's `model = ...`
    value; a bad field is one at its line in config.json.
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


def shape_from_config(config: Mapping[str, Any], *, source: str,
                      span: Span | None = None) -> ModelShape:
    """The shape a config describes, every field type- and range-checked (`ConfigFields`).

    An unsupported `model_type` is reported at `span` (the spec's `model = ...`) when given,
    else in `source`.
    """
    fields = ConfigFields(raw=config, source=source)
    model_type = fields.word("model_type")
    if model_type not in ARCHITECTURES:
        raise fail(span or fields.where("model_type"), f"unsupported model_type `{model_type}` in {source}", code="model",
                   help=(f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}",))
    facts = ARCHITECTURES[model_type]
    fields = attrs.evolve(fields, aliases=facts.config_names)
    hidden = fields.integer("hidden_size")
    n_heads = fields.integer("num_attention_heads")
    n_kv_heads = fields.integer("num_key_value_heads", default=n_heads, maximum=n_heads)
    if n_heads % n_kv_heads:
        raise fields.fail("num_key_value_heads", f"`num_key_value_heads` = {n_kv_heads} must "
                          f"divide `num_attention_heads` = {n_heads}")
    if "head_dim" not in config and hidden % n_heads:
        raise fields.fail("hidden_size", f"`hidden_size` = {hidden} is not a multiple of "
                          f"`num_attention_heads` = {n_heads}; give `head_dim`")
    architectures = fields.words("architectures") or (model_type,)
    return ModelShape(
        model_type=model_type, architecture=architectures[0],
        n_layers=fields.integer("num_hidden_layers"), hidden=hidden, n_heads=n_heads,
        n_kv_heads=n_kv_heads, head_dim=fields.integer("head_dim", default=hidden // n_heads),
        intermediate=fields.integer("intermediate_size", default=REQUIRED if facts.mlp_ratio is None
                                    else facts.mlp_ratio * hidden), vocab=fields.integer("vocab_size"),
        max_positions=fields.integer("max_position_embeddings", default=facts.max_positions),
        tie_word_embeddings=fields.flag("tie_word_embeddings"), facts=facts, config=dict(config),
        n_experts=1 if facts.experts is None else fields.integer(
            facts.experts.count_field, default=facts.experts.default_count),
    )
