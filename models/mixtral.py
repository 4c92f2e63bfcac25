"""Mixtral: Mistral's decoder with a sparse mixture of experts (MoE) in place of the MLP.

Each layer's `mlp` is `SparseMoE`: the router `mlp.gate` (a Linear, hidden -> n_experts)
scores every token; the softmax of those logits (in float32), its top `num_experts_per_tok`
experts, their probabilities renormalised to sum to 1 — Hugging Face's order — weight the
outputs of the chosen experts `mlp.experts.E`, each Llama's gated MLP. `router_jitter_noise`
only perturbs training, so a model in eval (as expc runs it) ignores it.

Dispatch is a traceable gather/scatter, not a dense mixture: a Python loop over the
experts (their number is fixed by the config, so torch.fx records it unrolled), each
expert taking the token rows routed to it (`nonzero` of its routing mask), running on those
rows only and adding its weighted output back with `index_add`, exactly as Hugging Face's
`MixtralExperts` does. So a forward costs the FLOPs of the chosen experts only; a dense
formulation (every expert on every token, weighted by zeros elsewhere) would cost
`n_experts / top_k` times the MLP's FLOPs (4x for Mixtral 8x7B). The price of the sparse
form: each expert's `nonzero` waits for the GPU (n_experts syncs per layer, as in Hugging
Face's loop), and `compile = true` breaks its graph there.

Sites: `router` marks the router logits `[B, S, n_experts]`; `mlp_out` (marked by the
block) is the MoE's output. There is no `mlp_post`: each expert's neurons exist only for
the rows routed to it (`expc check` says so). Checkpoints keep Mixtral's own names
(`block_sparse_moe.gate`, `block_sparse_moe.experts.E.w1|w2|w3`), which
`expc.models.checkpoint_names` maps onto ours.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from torch import nn

from expc.models import markers
from expc.models.config import ModelConfig
from expc.models.layers import GatedMLP
from expc.models.llama import (
    PreNormBlock, build_rms_final_norm, build_token_embeddings,
    decoder_config,
)
from expc.models.registry import Architecture, register
from expc.models.sliding_windows import sliding_windows
from expc.spec.config_fields import ConfigFields
from expc.spec.model_shape import shape_from_config

@attrs.frozen(kw_only=True)
class MoEConfig(ModelConfig):
    """`ModelConfig` plus the mixture of experts: `n_experts` per layer, `top_k` per token."""

    n_experts: int
    top_k: int


class Expert(GatedMLP):
    """One expert: Llama's gated MLP on the `[N, H]` rows routed to it. It marks no
    `mlp_post`: its neurons cover only those rows, not the `[B, S]` grid a site has."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, H] -> [N, H]
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class SparseMoE(nn.Module):
    """Router `gate`, top-k experts per token, their renormalised weights; see the module
    docstring for the dispatch and its cost."""

    def __init__(self, cfg: MoEConfig, *, layer: int, head: int | None):
        super().__init__()
        self.layer, self.head, self.top_k = layer, head, cfg.top_k
        self.gate = nn.Linear(cfg.hidden_size, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(
            Expert(cfg, layer=layer, head=head) for _ in range(cfg.n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, H] -> [B, S, H]
        logits = markers.mark(self.gate(x), "router", self.layer, self.head)  # [B, S, E]
        top = torch.topk(torch.softmax(logits.float(), dim=-1), self.top_k, dim=-1)
        weights = top[0] / top[0].sum(dim=-1, keepdim=True)  # [B, S, k] float32
        rows = x.reshape(-1, x.shape[-1])  # [T, H]
        chosen, weights = top[1].reshape(-1, self.top_k), weights.reshape(-1, self.top_k)  # [T, k]
        out = torch.zeros_like(rows)
        for index, expert in enumerate(self.experts):
            routed = (chosen == index).nonzero()  # [N, 2]: (token row, slot among its k)
            token, slot = routed[:, 0], routed[:, 1]
            weighted = expert(rows[token]) * weights[token, slot, None]  # [N, H] float32
            out = out.index_add(0, token, weighted.to(out.dtype))
        return out.view(x.shape)


class MixtralBlock(PreNormBlock):
    """Llama's pre-norm block with `SparseMoE` as its `mlp`."""

    def __init__(self, cfg: MoEConfig, layer: int, head: int | None):
        super().__init__(cfg, layer, head)
        self.mlp = SparseMoE(cfg, layer=layer, head=head)


def mixtral_config(raw: Mapping, source: str) -> MoEConfig:
    """Llama's fields, one `sliding_window` (default none) on every layer, and the experts
    (their count read where `expc check` reads it)."""
    fields = ConfigFields(raw=raw, source=source)
    shape = shape_from_config(raw, source=source)
    top_k = fields.integer("num_experts_per_tok", default=2, maximum=shape.n_experts)
    cfg = decoder_config(raw, source, sliding_windows=sliding_windows("mixtral", raw, source))
    return MoEConfig(**attrs.asdict(cfg, recurse=False), n_experts=shape.n_experts, top_k=top_k)


MIXTRAL = register(Architecture(
    model_type="mixtral", hf_architectures=("MixtralForCausalLM", "MixtralModel"), causal=True,
    uses_rope=True, config_from_hf=mixtral_config,
    build_embeddings=build_token_embeddings, build_block=MixtralBlock,
    build_final_norm=build_rms_final_norm,
))
