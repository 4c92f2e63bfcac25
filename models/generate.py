"""The KV cache and greedy generation of a `HydraTransformer`.

The cache holds keys/values per attention layer — one set per Hydra head for the layers
inside the heads — plus which cached positions are real tokens and how many real tokens
each sample has seen, so positions keep following the attention mask across steps.
Greedy decoding picks each next token from the mean of the selected heads' logits.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch

from expc.models.layers import LayerKV


@attrs.define(kw_only=True)
class KVCache:
    """Keys/values of every attention layer, keyed by `(layer, head)`."""

    layers: dict[tuple[int, int | None], LayerKV]
    mask: torch.Tensor  # [B, T_max] bool, True = a real (non-padding) token
    seen: torch.Tensor  # [B] long, real tokens cached per sample (next position id)
    length: int = 0  # positions filled so far

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    @classmethod
    def allocate(cls, owners: Iterable[tuple[int, int | None]], *, batch: int, max_len: int,
                 n_kv_heads: int, head_dim: int, like: torch.Tensor) -> KVCache:
        """Zeroed buffers for `max_len` positions, dtype and device of `like`."""
        shape = (batch, n_kv_heads, max_len, head_dim)
        layers = {owner: LayerKV(keys=like.new_zeros(shape), values=like.new_zeros(shape))
                  for owner in owners}
        return cls(layers=layers,
                   mask=torch.zeros(batch, max_len, dtype=torch.bool, device=like.device),
                   seen=torch.zeros(batch, dtype=torch.long, device=like.device))


@torch.no_grad()
def greedy_generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                    max_new_tokens: int, head_indices=None, use_cache: bool = True) -> torch.Tensor:
    """`[B, S]` -> `[B, S + max_new_tokens]`; without the cache every step recomputes it all."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    tokens, mask = input_ids, attention_mask
    step_ids, step_mask = input_ids, attention_mask
    if use_cache:
        model.init_kv_cache(input_ids.shape[0], input_ids.shape[1] + max_new_tokens)
    try:
        for _ in range(max_new_tokens):
            if not use_cache:
                step_ids, step_mask = tokens, mask
            logits = model(step_ids, step_mask, head_indices, last_token_only=True)  # [n, B, 1, V]
            next_token = logits[:, :, -1].mean(0).argmax(-1, keepdim=True)  # [B, 1]
            tokens = torch.cat([tokens, next_token], dim=1)
            mask = torch.cat([mask, torch.ones_like(next_token)], dim=1)
            step_ids, step_mask = next_token, torch.ones_like(next_token)
    finally:
        if use_cache:
            model.reset_kv_cache()
    return tokens
