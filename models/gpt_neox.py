"""GPT-NeoX (Pythia): partial rotary, parallel residual, fused per-head `query_key_value`.

Pre-norm LayerNorm blocks with biases everywhere, an ungated GELU MLP, an untied LM head
(`embed_out`). With `use_parallel_residual` (Pythia's default) attention and MLP both read
the block input: `x + attn(ln_1(x)) + mlp(ln_2(x))`; without it the block is Llama's
sequential one. Rotary positions turn only the first `int(head_dim * factor)` channels of
each head (`rope_parameters.partial_rotary_factor`, older configs' `rotary_pct`, default
0.25; base `rope_theta` or `rotary_emb_base`). The checkpoint's modules map onto Llama's
roles (contracts §1), the fused projection read as its parts at load time
(`expc.models.fused_checkpoint`):

    ours                                    GPT-NeoX checkpoint (optionally under `gpt_neox.`)
    embed_tokens                            embed_in
    layers.L.input_layernorm                layers.L.input_layernorm
    layers.L.self_attn.q_proj|k_proj|v_proj layers.L.attention.query_key_value, rows
                                            [h * 3d, h * 3d + d) | next d | last d of head h
    layers.L.self_attn.o_proj               layers.L.attention.dense
    layers.L.post_attention_layernorm       layers.L.post_attention_layernorm
    layers.L.mlp.up_proj | down_proj        layers.L.mlp.dense_h_to_4h | dense_4h_to_h
    norm                                    final_layer_norm
    lm_head                                 embed_out (bare)

Sites in a parallel block: `mlp_in` = `post_attention_layernorm(resid_in)` (the MLP does
not see attention's output), `resid_mid` = `resid_in + attn_out`, `resid_out` =
`resid_mid + mlp_out`.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch

from expc.models import markers
from expc.models.config import ModelConfig, parse_common, parse_rope
from expc.models.gpt2 import GPT2Block, build_final_norm
from expc.models.layers import ForwardContext, RotaryAttention, activation
from expc.models.llama import build_token_embeddings
from expc.models.partial_rotary import PartialRope, apply_partial_rotary, partial_rotary_factor
from expc.models.registry import Architecture, register
from expc.spec.config_fields import ConfigFields

PARALLEL = "use_parallel_residual"


class NeoXAttention(RotaryAttention):
    """Llama's attention, rotating only the first `rope.dims` channels of each head."""

    def __init__(self, cfg: ModelConfig, *, layer: int, head: int | None):
        super().__init__(cfg, layer=layer, head=head)
        self.rotary_dims = cfg.rope.dims

    def rotate(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, n, d]
        return apply_partial_rotary(x, ctx.cos, ctx.sin, self.rotary_dims)


@attrs.frozen(kw_only=True)
class NeoXConfig(ModelConfig):
    """`ModelConfig` plus whether attention and the MLP run side by side
    (`use_parallel_residual`, Pythia's default) or one after the other."""

    parallel_residual: bool


class NeoXBlock(GPT2Block):
    """GPT-2's block (LayerNorms, ungated MLP) with partial-rotary causal attention, its two
    branches in parallel or in sequence."""

    def __init__(self, cfg: NeoXConfig, layer: int, head: int | None):
        super().__init__(cfg, layer, head)
        self.self_attn = NeoXAttention(cfg, layer=layer, head=head)
        self.parallel = cfg.parallel_residual

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, H]
        if not self.parallel:
            return super().forward(x, ctx)
        layer, head = self.layer, self.head
        x = markers.mark(x, "resid_in", layer, head)
        attn_in = markers.mark(self.input_layernorm(x), "attn_in", layer, head)
        attn_out = markers.mark(self.self_attn(attn_in, ctx), "attn_out", layer, head)
        mid = markers.mark(x + attn_out, "resid_mid", layer, head)
        mlp_in = markers.mark(self.post_attention_layernorm(x), "mlp_in", layer, head)
        mlp_out = markers.mark(self.mlp(mlp_in), "mlp_out", layer, head)
        return markers.mark(mid + mlp_out, "resid_out", layer, head)


def _rope(fields: ConfigFields, raw: Mapping, source: str, head_dim: int) -> PartialRope:
    """Hugging Face's rope with the older `rotary_emb_base` / `rotary_pct` understood."""
    rope = parse_rope(raw, source)
    nested = fields.section("rope_parameters")
    if ((nested is None or "rope_theta" not in nested.raw) and "rope_theta" not in raw
            and "rotary_emb_base" in raw):
        rope = attrs.evolve(rope, theta=fields.number("rotary_emb_base"))
    where, key, factor = partial_rotary_factor(fields, default=0.25, legacy="rotary_pct")
    dims = int(head_dim * factor)
    if not 0 < factor <= 1 or dims % 2:
        raise where.fail(key, f"unsupported partial rotary factor {factor}: it rotates {dims} "
                         f"of {head_dim} channels per head", code="model-unsupported",
                         help=("gpt_neox models load with an even, non-zero number of rotated "
                               "channels per head",))
    return PartialRope(**attrs.asdict(rope, recurse=False), dims=dims)


def gpt_neox_config(raw: Mapping, source: str) -> NeoXConfig:
    """GPT-NeoX's config.json: LayerNorm eps, GELU, biases (`attention_bias`), partial rope."""
    fields = ConfigFields(raw=raw, source=source)
    act = activation(fields, "hidden_act", default="gelu")
    parallel = fields.flag(PARALLEL, default=True)
    bias = fields.flag("attention_bias", default=True)
    cfg = parse_common(raw, source, hidden_act=act, qkv_bias=bias, o_bias=bias, mlp_bias=True,
                       norm_eps=fields.number("layer_norm_eps", default=1e-5))
    rope = _rope(fields, raw, source, cfg.head_dim)
    return NeoXConfig(**{**attrs.asdict(cfg, recurse=False), "rope": rope},
                      parallel_residual=parallel)


GPT_NEOX = register(Architecture(
    model_type="gpt_neox", hf_architectures=("GPTNeoXForCausalLM", "GPTNeoXModel"), causal=True,
    uses_rope=True, config_from_hf=gpt_neox_config, build_embeddings=build_token_embeddings,
    build_block=NeoXBlock, build_final_norm=build_final_norm,
))
