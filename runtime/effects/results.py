"""The `effect/...` result tensors in data order, and their manifest entries.

Each entry says what was measured in words, and summarises the head: the `mean` of its
per-sample values and a 95% confidence interval `ci95` = mean -+ 1.96 s / sqrt(n) (s the
sample standard deviation, n the samples); `ci95` is null below two samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from expc.compiler.plan import EffectEntry
from expc.runtime.data.batches import restore_data_order
from expc.runtime.state_protocol import State

_WHAT = {
    "kl": "KL(reference || head) of the next-token distributions, mean over the {mask} tokens",
    "top1": "fraction of the {mask} tokens whose top-1 next token agrees with the reference's",
    "loss": "next-token cross-entropy, mean over the sample's real tokens",
    "logit_diff": "logit of `{correct}` minus logit of `{wrong}` at the last real token",
    "cosine": "cosine of the head's and the reference's {at} pooled as mean over the {mask} "
              "tokens",
}


def effect_meaning(entry: EffectEntry) -> str:
    effect = entry.effect
    aggregate_mask = None if effect.aggregate is None else effect.aggregate.mask
    mask = effect.mask or aggregate_mask
    words = _WHAT[entry.metric].format(
        mask="attention" if mask is None else (mask.field or mask.kind),
        correct=effect.correct, wrong=effect.wrong,
        at=f"{effect.at_site}[{effect.at_layer}]")
    head = "" if entry.head is None else f" of head {entry.head}"
    reference = "" if entry.reference is None else f" vs head {entry.reference}"
    return f"{words}{head}{reference}, per sample"


def summary(values: torch.Tensor) -> tuple[float | None, list[float] | None]:
    """The mean of `values` `[n]` and its 95% interval (None where undefined)."""
    values = values.to(torch.float64)
    n = values.numel()
    if n == 0:
        return None, None
    mean = float(values.mean())
    if n < 2:
        return mean, None
    half = 1.96 * float(values.std(unbiased=True)) / math.sqrt(n)
    return mean, [mean - half, mean + half]


def effect_description(entry: EffectEntry, values: torch.Tensor) -> dict:
    """The manifest entry of one effect tensor (docs/run-folder.md)."""
    mean, ci95 = summary(values)
    return {"kind": "effect", "meaning": effect_meaning(entry), "metric": entry.metric,
            "name": entry.effect.key_name, "head": entry.head, "reference": entry.reference,
            "mean": mean, "ci95": ci95}


def effect_results(entries: tuple[EffectEntry, ...], states: Mapping[str, State], *,
                   sample_index: torch.Tensor
                   ) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Every effect's `[N]` values in data order (`sample_index` names each run-order row's
    sample) and its manifest description."""
    tensors: dict[str, torch.Tensor] = {}
    descriptions: dict[str, dict] = {}
    for entry in entries:
        values = states[entry.key].take_result()[""].detach().cpu()
        tensors[entry.key] = restore_data_order(values, sample_index).contiguous()
        descriptions[entry.key] = effect_description(entry, values)
    return tensors, descriptions
