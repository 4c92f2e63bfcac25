"""Effects that compare a head with the reference head (`vs heads[R]`): `kl`, `top1`, `cosine`.

Per sample, over the tokens the mask selects (default every real token):
- `kl`: the mean of KL(P_ref || P_head) = sum_v p_ref (log p_ref - log p_head) of the
  next-token distributions softmax(logits), in float64;
- `top1`: the fraction of tokens whose argmax agrees (ties go to the lower token id);
- `cosine`: the cosine of the two heads' vectors at a site, each pooled as the mean over
  the selected tokens (`aggregate = mean(mask = M)`), in float64.
"""

from __future__ import annotations

import torch

from expc.runtime.effects.base import EffectState, mask_label, per_row_sums, selected_tokens
from expc.runtime.sinks import BatchContext
from expc.runtime.token_sums import sum_selected
from expc.spec import ir


def _kl(ref: torch.Tensor, head: torch.Tensor) -> torch.Tensor:  # [T, V] each -> [T]
    log_ref = torch.log_softmax(ref.to(torch.float64), dim=-1)
    log_head = torch.log_softmax(head.to(torch.float64), dim=-1)
    return (log_ref.exp() * (log_ref - log_head)).sum(dim=-1)


def _agree(head: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:  # [T, V] each -> [T]
    return head.argmax(dim=-1) == ref.argmax(dim=-1)


class _MaskedEffect(EffectState):
    """An effect over the tokens a mask selects; a sample whose mask is empty is an error."""

    def __init__(self, *, mask: ir.Mask | None = None):
        self.empty_message = f"the `{mask_label(mask)}` mask selects no token of this sample"
        super().__init__()
        self.mask = mask

    def selected(self, context: BatchContext, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's selected tokens `[B, S]` and their count per row `[B]`."""
        selected = selected_tokens(self.mask, context).to(device)
        counts = selected.sum(dim=1)
        self.flag_empty(counts, context)
        return selected, counts


class _TokenMeanEffect(_MaskedEffect):
    """The mean over the mask's tokens of a per-token comparison of head and reference."""

    def per_token(self, head: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def values(self, head: torch.Tensor, ref: torch.Tensor, *,
               context: BatchContext) -> torch.Tensor:
        selected, counts = self.selected(context, head.device)
        total = per_row_sums(head, selected, self.per_token, ref.to(head.device))
        return total / counts.clamp(min=1)


class KlEffect(_TokenMeanEffect):
    metric = "kl"

    def per_token(self, head: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return _kl(ref, head)


class Top1Effect(_TokenMeanEffect):
    metric = "top1"

    def per_token(self, head: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return _agree(head, ref)


class CosineEffect(_MaskedEffect):
    metric = "cosine"

    def values(self, head: torch.Tensor, ref: torch.Tensor, *,
               context: BatchContext) -> torch.Tensor:
        selected, counts = self.selected(context, head.device)
        mine = sum_selected(head.to(torch.float64), selected).reshape(len(counts), -1)
        theirs = sum_selected(ref.to(device=head.device, dtype=torch.float64),
                              selected).reshape(len(counts), -1)
        # the means' 1/count factors cancel in a cosine
        return (mine * theirs).sum(dim=1) / (mine.norm(dim=1) * theirs.norm(dim=1))
