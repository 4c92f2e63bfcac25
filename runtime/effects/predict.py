"""Effects of how well one head predicts the data: `loss`, `logit_diff`.

- `loss`: per sample, the mean over t = 0..n-2 of -log softmax(logits_t)[token_{t+1}] (n real
  tokens; right-padded batches), in float64; a one-token sample has nothing to predict.
- `logit_diff`: logit[correct] - logit[wrong] at the sample's last real token. The two token
  ids per sample come from the data (`correct`/`wrong` fields, resolved to ids by the data
  loader), carried by each batch beside its rows (`BatchContext.token_fields`), so no
  per-dataset table is held.
"""

from __future__ import annotations

import torch

from expc.runtime.effects.base import EffectState, per_row_sums
from expc.runtime.sinks import BatchContext


def _next_token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`[T, V]`, `[T]` -> `[T]`: -log softmax(logits)[target], in float64."""
    log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)
    return -log_probs.gather(1, targets[:, None]).squeeze(1)


class LossEffect(EffectState):
    metric = "loss"
    empty_message = "it has one real token, so loss has no next token to predict"

    def values(self, logits: torch.Tensor, *, context: BatchContext) -> torch.Tensor:
        real = context.attention_mask.to(logits.device).bool()
        predicts = real[:, 1:]  # position t counts when token t+1 is real
        counts = predicts.sum(dim=1)
        self.flag_empty(counts, context)
        targets = context.input_ids.to(logits.device)[:, 1:]
        total = per_row_sums(logits[:, :-1], predicts, _next_token_nll, targets)
        return total / counts.clamp(min=1)


class LogitDiffEffect(EffectState):
    metric = "logit_diff"

    def __init__(self, *, correct: str, wrong: str):
        super().__init__()
        self.correct = correct  # the data fields whose token ids each batch carries
        self.wrong = wrong

    def values(self, logits: torch.Tensor, *, context: BatchContext) -> torch.Tensor:
        real = context.attention_mask.to(logits.device).bool()
        counts = real.sum(dim=1)
        self.flag_empty(counts, context)
        last = logits[torch.arange(len(counts), device=logits.device),
                      (counts - 1).clamp(min=0)].to(torch.float64)  # [B, V]
        fields = context.token_fields
        pick = torch.stack([fields[self.correct], fields[self.wrong]], dim=1).to(logits.device)
        chosen = last.gather(1, pick)  # [B, 2]
        return chosen[:, 0] - chosen[:, 1]
