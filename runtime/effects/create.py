"""The effect state an `EffectEntry` asks for (`runtime/sinks.effect_sink` feeds it)."""

from __future__ import annotations

import torch

from expc.compiler.plan import EffectEntry
from expc.runtime.effects.base import EffectState
from expc.runtime.effects.compare import CosineEffect, KlEffect, Top1Effect
from expc.runtime.effects.predict import LogitDiffEffect, LossEffect


def create_effect(entry: EffectEntry, *, correct: torch.Tensor | None = None,
                  wrong: torch.Tensor | None = None) -> EffectState:
    """A fresh state for `entry`; `logit_diff` takes its samples' token ids `[N]` (data
    order) for the entry's `correct` and `wrong` fields."""
    effect = entry.effect
    if entry.metric in ("kl", "top1"):
        return (KlEffect if entry.metric == "kl" else Top1Effect)(mask=effect.mask)
    if entry.metric == "cosine":
        return CosineEffect(mask=None if effect.aggregate is None else effect.aggregate.mask)
    if entry.metric == "loss":
        return LossEffect()
    if entry.metric == "logit_diff":
        if correct is None or wrong is None:
            raise ValueError("logit_diff needs the correct and wrong token ids of every sample")
        return LogitDiffEffect(correct=correct, wrong=wrong)
    raise ValueError(f"unknown effect metric {entry.metric!r}")

