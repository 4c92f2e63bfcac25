"""Which tokens of a batch an intervention changes: `positions = ...` as a `[B, S]` mask.

Positions count over each sample's real tokens (batches are right-padded, padding is never
selected): `all`, `first`, `last` and `field("m")` are the capture masks of the same names
(`runtime/aggregate/masks.select_tokens`); a list `[i, ...]` picks token i of each sample,
a negative i counting back from its last real token. A list index that a sample does not
have is a `SampleError` naming the sample.
"""

from __future__ import annotations

import torch

from expc.runtime.aggregate.masks import select_tokens
from expc.runtime.sample_error import SampleCheck
from expc.spec import ir

_MASK_OF = {"all": "attention", "first": "first", "last": "last", "field": "field"}


def select_positions(positions: ir.Positions, *, attention_mask: torch.Tensor,
                     field_mask: torch.Tensor | None = None,
                     sample_index: torch.Tensor | None = None) -> torch.Tensor:
    """The `[B, S]` bool mask of the tokens `positions` selects; a list needs each row's
    sample (`sample_index` `[B]`) to name one that lacks a listed position."""
    if positions.kind != "list":
        return select_tokens(_MASK_OF[positions.kind], attention_mask=attention_mask,
                             field_mask=field_mask, field=positions.field)
    real = attention_mask.bool()
    batch, seq = real.shape
    counts = real.sum(dim=1)  # [B]
    wanted = torch.tensor(positions.indices, dtype=torch.int64, device=real.device)  # [P]
    at = torch.where(wanted < 0, counts[:, None] + wanted, wanted)  # [B, P]
    inside = (at >= 0) & (at < counts[:, None])  # [B, P]
    # eager: an edit has no finalisation to defer the check to
    SampleCheck(message=f"it has no token at positions = {list(positions.indices)}",
                code="intervention-positions", eager=True).observe(~inside.all(dim=1),
                                                                    sample_index)
    selected = torch.zeros(batch, seq, dtype=torch.bool, device=real.device)
    return selected.scatter_(1, at, True)

