"""The building blocks every decoder family shares: norms, rotary positions, MLP, attention.

Names of submodules and parameters follow Hugging Face's Llama (`self_attn.q_proj`,
`mlp.down_proj`, ...) so checkpoint keys map onto them one to one and importance metrics
find the same module paths in every architecture. Everything here is fx-traceable: no
Python control flow depends on tensor values, and every capture site is a
`markers.mark(...)` call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from expc.models import markers
from expc.models.config import ModelConfig
from expc.spec.config_fields import ConfigFields


@attrs.define(kw_only=True)
class ForwardContext:
    """What every block of one forward pass shares, built once by the model.

    `masks` maps a sliding window (None = full attention) to a boolean mask
    `[B, 1, S, S]` (True = may attend); `cos`/`sin` are the rotary tables of rotary models,
    `local_cos`/`local_sin` those of a second, local rope (Gemma 3's sliding-window layers),
    computed by the first layer that needs them and reused by the others.
    """

    position_ids: torch.Tensor  # [B, S]
    masks: Mapping[int | None, torch.Tensor]
    cos: torch.Tensor | None = None  # [B, S, d]
    sin: torch.Tensor | None = None  # [B, S, d]
    local_cos: torch.Tensor | None = None  # [B, S, d]
    local_sin: torch.Tensor | None = None  # [B, S, d]


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
}


def activation(fields: ConfigFields, key: str, *, default: str) -> str:
    """The activation named by field `key`, one we implement (else a diagnostic there)."""
    act = fields.word(key, default=default)
    if act not in ACTIVATIONS:
        raise fields.fail(key, f"unsupported activation `{act}`", code="model-unsupported",
                          help=(f"supported activations: {', '.join(ACTIVATIONS)}",))
    return act


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 like Hugging Face, cast back after."""

    def __init__(self, size: int, *, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., size] -> [..., size]
        dtype = x.dtype
        x32 = x.to(torch.float32)
        variance = x32.pow(2).mean(-1, keepdim=True)  # [..., 1]
        return self.weight * (x32 * torch.rsqrt(variance + self.eps)).to(dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


class TokenEmbedding(nn.Embedding):
    """`nn.Embedding` called like every architecture's embeddings, `(input_ids, position_ids)`.

    Rotary models add positions inside attention, so the position ids are not used here.
    """

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids)  # [B, S] -> [B, S, H]


def unfilled_embedding(rows: int, size: int, *, cls: type[nn.Embedding] = nn.Embedding
                       ) -> nn.Embedding:
    """An embedding table of class `cls` left uninitialised: the loader fills every weight,
    and nn.Embedding's random init on the meta device costs seconds and ~75 MB of one-time
    imports."""
    return cls(rows, size, _weight=torch.empty(rows, size))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary positions; no buffers, so building on `meta` is harmless."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # Exact float32 values, held as Python floats so they need no device or checkpoint.
        self.inv_freq = tuple(cfg.rope.inverse_frequencies(cfg.head_dim).tolist())

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = torch.tensor(self.inv_freq, dtype=torch.float32, device=position_ids.device)
        freqs = position_ids[..., None].to(torch.float32) * inv_freq  # [B, S, d/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [B, S, d]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:  # [..., d] -> [..., d]
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x [B, S, n, d]` by positions given as `cos`/`sin [B, S, d]`."""
    cos = cos[:, :, None]  # [B, S, 1, d]
    sin = sin[:, :, None]
    return x * cos + rotate_half(x) * sin


class GatedMLP(nn.Module):
    """`down_proj(act(gate_proj(x)) * up_proj(x))`; the `mlp_post` marker sees the neurons."""

    def __init__(self, cfg: ModelConfig, *, layer: int, head: int | None):
        super().__init__()
        self.layer, self.head = layer, head
        hidden, inner, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, H] -> [B, S, H]
        post = self.act(self.gate_proj(x)) * self.up_proj(x)  # [B, S, I]
        return self.down_proj(markers.mark(post, "mlp_post", self.layer, self.head))


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, n_kv, T, d] -> [B, n_kv * groups, T, d] for grouped-query attention."""
    if groups == 1:
        return x
    b, n_kv, t, d = x.shape
    return x[:, :, None].expand(b, n_kv, groups, t, d).reshape(b, n_kv * groups, t, d)


class RotaryAttention(nn.Module):
    """Multi-head (grouped-query) causal attention with rotary positions.

    `qk_norm` adds OLMo2's RMS norms over the whole query and key projections (`q_norm`,
    `k_norm`) before the heads are split. The `values` marker sees the value projection
    `[B, S, n_kv_heads * d]`; `q`/`k`/`v` the heads after rotary, `[B, S, n, d]` (rotary is
    applied in that layout so the markers need no transpose of their own), and `z` each
    query head's output before `o_proj`; the fused attention is the `markers.attention` leaf.
    """

    def __init__(self, cfg: ModelConfig, *, layer: int, head: int | None, qk_norm: bool = False):
        super().__init__()
        self.layer, self.head = layer, head
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_attention_heads, cfg.n_kv_heads, cfg.head_dim
        self.groups = cfg.kv_groups
        self.scale, self.softcap = cfg.attention_scale, cfg.attn_logit_softcap
        self.window = cfg.sliding_windows[layer]
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, q_size, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_size, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_size, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(q_size, cfg.hidden_size, bias=cfg.o_bias)
        self.q_norm = RMSNorm(q_size, eps=cfg.norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(kv_size, eps=cfg.norm_eps) if qk_norm else None

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:  # [B, S, n*d] -> [B, S, n, d]
        return x.view(x.shape[0], x.shape[1], n, self.head_dim)

    def rotate(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, n, d]
        """Rotary positions on each head (GPT-NeoX rotates only part of it)."""
        return apply_rotary(x, ctx.cos, ctx.sin)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # [B, S, H] -> [B, S, H]
        layer, head = self.layer, self.head
        q, k = self.q_proj(x), self.k_proj(x)  # [B, S, nH*d], [B, S, nKV*d]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        v = markers.mark(self.v_proj(x), "values", layer, head)  # [B, S, nKV*d]
        q = self.rotate(self._heads(q, self.n_heads), ctx)  # [B, S, nH, d]
        k = self.rotate(self._heads(k, self.n_kv_heads), ctx)  # [B, S, nKV, d]
        q = markers.mark(q, "q", layer, head).transpose(1, 2)  # [B, nH, S, d]
        k = markers.mark(k, "k", layer, head).transpose(1, 2)  # [B, nKV, S, d]
        v = markers.mark(self._heads(v, self.n_kv_heads), "v", layer, head).transpose(1, 2)
        out = markers.attention(
            q, repeat_kv(k, self.groups), repeat_kv(v, self.groups), ctx.masks[self.window],
            self.scale, layer, head, softcap=self.softcap,
        )  # [B, nH, S, d]
        z = markers.mark(out.transpose(1, 2), "z", layer, head)  # [B, S, nH, d]
        return self.o_proj(z.reshape(x.shape[0], x.shape[1], self.n_heads * self.head_dim))
