"""Which units an intervention changes at one module/layer/head: `channels = ...` resolved.

`[0, 5, 7]` as written; `lowest`/`highest` the K lowest- or highest-scored units of an
earlier run's importance scores of the same module (ties go to the lower index); `random`
K units from `torch.Generator().manual_seed(seed + layer)`'s `randperm`. K is `count`, or
`round(fraction * D)` (Python's `round`), and must satisfy 1 <= K < D. Units are channels
of the target value, except units scored by `kv_head_contribution` at `self_attn.o_proj`,
which are KV-head groups: each stands for the channels of its query heads
(`ModelFacts.kv_channels`). No `channels =` selects every channel.
"""

from __future__ import annotations

import attrs
import torch

from expc.compiler.plan import InterventionEntry
from expc.runtime.intervene.facts import ModelFacts
from expc.runtime.intervene.sources import RunSources
from expc.spec import ir
from expc.spec.diagnostics import Span, fail
from expc.spec.rankings import ranked

CODE = "intervention-units"


@attrs.frozen(kw_only=True)
class Selection:
    """One intervention entry's chosen units and the target channels they stand for."""

    entry: InterventionEntry
    units: torch.Tensor  # [K] int64, channels or (kv) KV-head indices: what is stored
    channels: torch.Tensor  # [K'] int64, channels of the target value that change
    kv: bool = False
    width: int  # C, the target value's channels
    scores_key: str | None = None  # lowest/highest: the key the scores came from


def span_of(node_span: Span, entry: InterventionEntry) -> Span | None:
    """A statement part's own span when it was parsed, else the entry's."""
    return entry.span if node_span == ir.NO_SPAN else node_span


def unit_count(units: ir.Units, total: int, *, span: Span | None) -> int:
    """K from `count` or `fraction` of `total` units; 1 <= K < total."""
    wanted = units.wanted(total)
    what = (f"count = {units.count}" if units.count is not None
            else f"fraction = {units.fraction} of {total} (rounds to {wanted})")
    if not 1 <= wanted < total:
        raise fail(span, f"{what} selects {wanted} of {total} units; it must select at least "
                   f"one and fewer than all", code=CODE,
                   help=("choose a count from 1 to {} or a fraction that rounds to it"
                         .format(total - 1),))
    return wanted


def chosen_units(entry: InterventionEntry, *, total: int, sources: RunSources,
                 span: Span | None) -> tuple[torch.Tensor, str | None]:
    """The selected unit indices `[K]` (of `total`) and the scores key they came from."""
    units = entry.intervention.channels
    if units is None:
        return torch.arange(total, dtype=torch.int64), None
    if units.kind == "list":
        bad = [i for i in units.indices if not 0 <= i < total]
        if bad:
            raise fail(span, f"channel {bad[0]} is out of range: the target has {total} units "
                       f"(0..{total - 1})", code=CODE)
        return torch.tensor(units.indices, dtype=torch.int64), None
    k = unit_count(units, total, span=span)
    if units.kind == "random":
        generator = torch.Generator().manual_seed(units.seed + entry.layer)
        return torch.randperm(total, generator=generator)[:k].sort().values, None
    if entry.module_path is None:
        raise fail(span, f"`{units.kind}(...)` reads a module's importance scores, and "
                   f"`{entry.target}` is not a module", code=CODE,
                   help=("intervene on a module role (e.g. mlp.down_proj) to pick its "
                         "scored channels",))
    key, scores = sources.scores(units.run, metric=units.metric, module_path=entry.module_path,
                                 head=entry.head, count=total, span=span)
    chosen = ranked(scores.detach().cpu().double().numpy(), k, highest=units.kind == "highest")
    return torch.from_numpy(chosen), key


def select_units(entry: InterventionEntry, *, facts: ModelFacts,
                 sources: RunSources) -> Selection:
    """The units `entry` changes, checked against the model (diagnostics at the units)."""
    units = entry.intervention.channels
    span = span_of(units.span, entry) if units is not None else entry.span
    kv = entry.kv_units
    chosen, key = chosen_units(entry, total=facts.unit_count(entry), sources=sources,
                               span=span)
    return Selection(entry=entry, units=chosen, kv=kv, width=facts.width(entry),
                     channels=facts.kv_channels(chosen) if kv else chosen, scores_key=key)
