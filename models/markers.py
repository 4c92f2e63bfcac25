"""Named capture points in the model's forward, kept as single nodes by torch.fx.

`mark` is an identity that torch.fx records as one `call_function` node carrying its site
name (one of `expc.spec.vocabulary.SITES`), global layer and Hydra head in `node.args`; the
compiler replaces the markers it needs with taps and strips the rest, leaving exactly the
plain model. `attention` is the fused scaled-dot-product attention as one leaf node, so the
compiler can swap in the explicit softmax (which exposes `attn_pattern`) only at the layers
whose patterns are captured.

Call both through the module (`markers.mark(...)`), not via `from ... import mark`:
torch.fx patches the name in this module's globals while it traces.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F


@torch.fx.wrap
def mark(x: torch.Tensor, site: str, layer: int | None, head: int | None) -> torch.Tensor:
    """Identity; `site` names the capture point, `layer` is global, `head` the Hydra head."""
    return x


@torch.fx.wrap
def attention(
    q: torch.Tensor,  # [B, n_heads, S, d]
    k: torch.Tensor,  # [B, n_heads, S, d] (KV heads already repeated for GQA)
    v: torch.Tensor,  # [B, n_heads, S, d]
    attn_mask: torch.Tensor,  # [B, 1, S, S] bool, True = may attend
    scale: float,
    layer: int,
    head: int | None,
    softcap: float | None = None,
) -> torch.Tensor:  # [B, n_heads, S, d]
    """Fused attention; `layer`/`head` only label the node for the compiler. Gemma 2's
    logit soft-capping (`softcap`) has no fused kernel, so a capped layer always takes the
    explicit softmax, as Hugging Face's eager attention does."""
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    return torch.matmul(attention_weights(q, k, attn_mask, scale, softcap), v)


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor, scale: float,
    softcap: float | None = None,
) -> torch.Tensor:  # [B, n_heads, S, S]
    """The explicit softmax weights that `attention` computes implicitly (scores capped to
    `softcap * tanh(scores / softcap)` when given)."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)
