"""The batch loop's check for NaN and inf: every state's queued sums in one host read.

Each state queues, per batch, float64 sums of what it added (`runtime/finite_watch.py`),
finite exactly when those values are. `check_finite` adds the queued sums of all states and
reads the total with one `bool(...)`; only when it is not finite does it ask each state
where, and raises `NonFiniteError` for the earliest place: the first batch, and in it the
state nearest the embedding (so the key named is where the NaN first shows, not a later
layer it flowed into). The loop (`runtime/execute.py`) checks after every batch on CPU,
where reading the total waits for no device, and on an accelerator every `ACCELERATOR_CHECK_EVERY` batches, at each checkpoint and
before the finish, so the device is not stalled per batch; the place named is the same either
way, since the sums keep their batch numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from expc.compiler.plan import CaptureEntry, MetricEntry, Plan
from expc.runtime.finite_watch import NonFinite
from expc.runtime.state_protocol import State
from expc.runtime.data.sources import Origin
from expc.spec.diagnostics import DiagnosticError

ACCELERATOR_CHECK_EVERY = 64  # batches between checks off CPU (bounds the queued sums too)
SHOWN_SAMPLES = 8  # sample numbers named for a batch-wide reduction
HELP = ["the model computed NaN or inf: look for NaN or inf in its weights (an embedding row, "
        "a layer's weight), or run in float32 if a half-precision activation overflowed"]


class NonFiniteError(ValueError):
    """A state took in a NaN or inf: its plan entry and where (`NonFinite`)."""

    def __init__(self, entry: CaptureEntry | MetricEntry, at: NonFinite):
        self.entry = entry
        self.at = at
        row = "" if at.row is None else f", row {at.row}"
        super().__init__(f"{entry.key}: non-finite value in batch {at.batch}{row}")


def check_every(device: torch.device) -> int:
    """How many batches the loop runs between checks on `device`."""
    return 1 if device.type == "cpu" else ACCELERATOR_CHECK_EVERY


def _depth(entry: CaptureEntry | MetricEntry, n_layers: int) -> int:
    """How far into the forward pass an entry sits: `embed` first, `final_norm` / `logits`
    after the last layer."""
    layer = getattr(entry, "layer", None)  # an effect has none: it reads the logits
    if layer is not None:
        return layer
    return -1 if getattr(entry, "site", None) == "embed" else n_layers


def check_finite(plan: Plan, states: Mapping[str, State]) -> None:
    """Raise `NonFiniteError` for the earliest non-finite addition queued in any state; the
    queues are empty afterwards."""
    sums = [sums for state in states.values() for sums in state.finite.sums()]
    if not sums:
        return
    found = []
    if not bool(torch.isfinite(torch.cat(sums).sum())):
        entries = (*plan.captures, *plan.metrics, *plan.effects)
        for index, entry in enumerate(entries):
            at = states[entry.key].finite.first()
            if at is not None:
                found.append(((at.batch, _depth(entry, plan.layout.n_layers), index), entry, at))
    for state in states.values():
        state.finite.clear()
    if found:
        _, entry, at = min(found, key=lambda item: item[0])
        raise NonFiniteError(entry, at)


def describe(entry: CaptureEntry | MetricEntry, key: str | None = None) -> str:
    """A result key (`key`, else the entry's) with its place:
    `capture/head1/resid_out_3 (layer 3, head 1)`."""
    layer = getattr(entry, "layer", None)
    place = [f"layer {layer}" if layer is not None else None,
             f"head {entry.head}" if entry.head is not None else None]
    place = [part for part in place if part]
    key = key or entry.key
    return f"{key} ({', '.join(place)})" if place else key


def nonfinite_diagnostic(exc: NonFiniteError, *, samples: Sequence[int],
                         origin: Callable[[int], Origin]) -> DiagnosticError:
    """The run's error for `exc`, at the data line of the sample (per-sample values) or of
    the batch's first sample (a reduction over the batch, whose samples are listed);
    `samples` are the batch's sample numbers, `origin` gives a sample's file and line (or
    table row), so this error names its place as every other sample error does."""
    what = describe(exc.entry)
    if exc.at.row is not None:
        sample = samples[exc.at.row]
        message = f"sample {sample}: {what} is NaN or inf for this sample"
    else:
        sample = samples[0]
        shown = ", ".join(map(str, samples[:SHOWN_SAMPLES]))
        more = f" and {len(samples) - SHOWN_SAMPLES} more" if len(samples) > SHOWN_SAMPLES else ""
        message = (f"sample {sample}: {what} took NaN or inf from batch {exc.at.batch}, "
                   f"samples {shown}{more} (the batch's first sample is here)")
    return DiagnosticError(origin(sample).error(message, code="nonfinite", help=HELP))
