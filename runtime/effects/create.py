"""The effect state an `EffectEntry` asks for (`runtime/sinks.effect_sink` feeds it)."""

from __future__ import annotations

from expc.compiler.plan import EffectEntry
from expc.runtime.effects.base import EffectState
from expc.runtime.effects.compare import CosineEffect, KlEffect, Top1Effect
from expc.runtime.effects.predict import LogitDiffEffect, LossEffect


def create_effect(entry: EffectEntry) -> EffectState:
    """A fresh state for `entry`; `logit_diff` reads each batch's token ids of the entry's
    `correct` and `wrong` fields from the batch context."""
    effect = entry.effect
    if entry.metric in ("kl", "top1"):
        return (KlEffect if entry.metric == "kl" else Top1Effect)(mask=effect.mask)
    if entry.metric == "cosine":
        return CosineEffect(mask=None if effect.aggregate is None else effect.aggregate.mask)
    if entry.metric == "loss":
        return LossEffect()
    if entry.metric == "logit_diff":
        return LogitDiffEffect(correct=effect.correct, wrong=effect.wrong)
    raise ValueError(f"unknown effect metric {entry.metric!r}")

