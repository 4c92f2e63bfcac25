"""The edit functions the compiler's `Edit` modules call: `x` `[B, S, C]` in, a new tensor out.

Each operation gives a replacement for the target value (`zero`: 0; `mean`: the source run's
`dataset_mean` `[C]`; `patch`: the same samples' values from the source run's `full`
capture, token t of each sample's real tokens taking the source's token t; `add`:
`x + scale * v` with `v` `[C]` or one row per sample; `scale`: `x * S`), and the edit keeps
it only at the selected positions x channels: `torch.where(selected, replacement, x)`, one
pass, never writing into `x` (the graph may still read it). Trailing dims past the sequence
are flattened into channels, so `[B, S, n, d]` values take channel indices too. Source
values are cast to `x`'s dtype after they are gathered, so the arithmetic is the model's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from expc.compiler.plan import InterventionEntry
from expc.runtime.intervene.facts import ModelFacts
from expc.runtime.intervene.positions import select_positions
from expc.runtime.intervene.sources import RunSources
from expc.runtime.intervene.units import Selection, select_units, span_of
from expc.runtime.sample_error import SampleCheck
from expc.runtime.sinks import BatchContext
from expc.spec.diagnostics import fail

Edit = Callable[[torch.Tensor], torch.Tensor]
Replacement = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B,S,C], where [B,S])


def _rows_of(context: BatchContext, values: torch.Tensor) -> torch.Tensor:
    """The batch rows' samples, on `values`' device (per-sample sources are in data order)."""
    if context.sample_index is None:
        raise ValueError("this intervention reads per-sample values and the batch context "
                         "has no sample_index")
    return context.sample_index.to(values.device)


def _aligned(rows: torch.Tensor, seq: int) -> torch.Tensor:
    """`[B, S_src, C]` -> `[B, seq, C]`: cut or zero-pad the sequence (real tokens are first)."""
    if rows.shape[1] >= seq:
        return rows[:, :seq]
    return F.pad(rows, (0, 0, 0, seq - rows.shape[1]))


def _patch(selection: Selection, sources: RunSources, context: BatchContext, *,
           n_samples: int | None) -> Replacement:
    entry, operation = selection.entry, selection.entry.intervention.operation
    span = span_of(operation.span, entry)
    _, full = sources.capture(operation.run, site=entry.site, layer=entry.layer,
                              head=entry.head, mode="full", width=selection.width, span=span)
    counts = sources.token_counts(operation.run, n_samples=n_samples, span=span)
    if full.shape[0] != counts.numel():
        raise fail(span, f"run folder `{operation.run}` holds {full.shape[0]} rows of "
                   f"{entry.site}[{entry.layer}] for {counts.numel()} samples", code="patch")
    check = SampleCheck(message=f"its real-token count differs from the same sample's in run "
                        f"folder `{operation.run}`, so its patched positions do not line up",
                        code="patch-tokens", eager=True)

    def replacement(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        rows = _rows_of(context, full)
        mine = context.attention_mask.to(torch.int64).sum(dim=1).to(full.device)  # [B]
        patched = where.any(dim=1).to(full.device)
        check.observe(patched & (counts[rows] != mine), rows)
        return _aligned(full[rows], x.shape[1]).to(device=x.device, dtype=x.dtype)

    return replacement


def _replacement(selection: Selection, sources: RunSources, context: BatchContext, *,
                 n_samples: int | None) -> Replacement:
    entry = selection.entry
    operation = entry.intervention.operation
    span = span_of(operation.span, entry)
    if operation.kind in ("mean", "patch") and entry.site is None:
        raise fail(span, f"`set = {operation.kind}(...)` reads a capture, and `{entry.target}` "
                   f"is a module, not a capture site", code="intervention-operation",
                   help=("use it on a site (e.g. mlp_out), or use zero / add / scale here",))
    if operation.kind == "zero":
        return lambda x, where: x.new_zeros(())
    if operation.kind == "scale":
        return lambda x, where: x * operation.scale
    if operation.kind == "mean":
        _, mean = sources.capture(operation.run, site=entry.site, layer=entry.layer,
                                  head=entry.head, mode="dataset_mean", width=selection.width,
                                  span=span)
        return lambda x, where: mean.to(device=x.device, dtype=x.dtype)
    if operation.kind == "patch":
        return _patch(selection, sources, context, n_samples=n_samples)
    if operation.kind == "add":
        vector = sources.vector(operation.run, operation.key, width=selection.width,
                                n_samples=n_samples, span=span)
        scale = 1.0 if operation.scale is None else operation.scale

        def added(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
            v = vector if vector.dim() == 1 else vector[_rows_of(context, vector)][:, None, :]
            return x + scale * v.to(device=x.device, dtype=x.dtype)

        return added
    raise ValueError(f"unknown intervention operation {operation.kind!r}")


def build_edit(selection: Selection, *, sources: RunSources, context: BatchContext,
               n_samples: int | None = None) -> Edit:
    """The edit of one intervention entry (its units already chosen, `select_units`).

    Sources are read here, once; `n_samples` (this run's) is what `patch` and per-sample
    vectors must match. Per batch the edit reads the context's masks and sample indices.
    """
    entry = selection.entry
    replacement = _replacement(selection, sources, context, n_samples=n_samples)
    channel_mask = torch.zeros(selection.width, dtype=torch.bool)
    channel_mask[selection.channels] = True
    channel_mask = channel_mask.to(sources.device)
    positions = entry.intervention.positions

    def edit(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[:2], -1)  # [B, S, C]
        where = select_positions(positions, attention_mask=context.attention_mask.to(x.device),
                                 field_mask=context.field_mask, sample_index=context.sample_index)
        keep = where[:, :, None] & channel_mask.to(x.device)  # [B, S, C]
        return torch.where(keep, replacement(flat, where), flat).reshape(x.shape)

    return edit


def build_edits(entries: tuple[InterventionEntry, ...], *, facts: ModelFacts,
                sources: RunSources, context: BatchContext, n_samples: int | None = None
                ) -> tuple[dict[str, Edit], dict[str, Selection]]:
    """Every entry's edit by `InterventionEntry.key` (the compiler's `edits`), and the
    selections behind them (their units become result tensors, `results.py`)."""
    selections = {entry.key: select_units(entry, facts=facts, sources=sources)
                  for entry in entries}
    edits = {key: build_edit(selection, sources=sources, context=context, n_samples=n_samples)
             for key, selection in selections.items()}
    return edits, selections
