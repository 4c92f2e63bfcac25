"""`State`: what the runtime asks of every state object, aggregator or importance metric.

One plan entry, one state object. Resume, multi-process runs and the finish all treat the
two kinds alike through these methods, so they carry the same names on both:
- `state_dict()` / `load_state_dict(state)`: plain tensors only (they go straight into a
  safetensors checkpoint), enough to continue exactly where the state left off;
- `merge(other)`: fold a state of the same kind (other batches, or another rank's shard) in
  exactly; aggregators merge in any grouping, `iterative_channel` only shards of the same
  batches (see its module);
- `result()`: the finished tensors, `{name: tensor}` — an aggregator's by suffix (`""` the
  main tensor, `.mask`, `.var`, `.count` beside it), a metric's by field (`score`, ...);
- `take_result()`: `result()`, after which the state may hold nothing. The finish
  (`runtime/state.collect_results`) calls it so that a capture's rows, the largest thing a
  run keeps, are handed over rather than held twice while they are put back in data order
  (measured: it replaced a full garbage collection that cost ~200 ms). The default just
  returns `result()`, which is right for states whose results are computed afresh from small
  accumulators (the metrics); aggregators override it;
- `finite`: a `FiniteWatch` (`runtime/finite_watch.py`) to which the state hands, once per
  batch, what it adds to itself (padding already excluded), so that the batch loop can fail
  a run at the first NaN or inf with one host read per batch for all states together
  (`runtime/nonfinite.py`).

Feeding a batch is not part of the protocol, because the two kinds are fed different inputs:
a capture sees one tensor at its site and picks tokens with the batch's masks,
`add(hidden, *, attention_mask, field_mask)`; a metric sees its module's input and output
pair, `update(x_in, y_out, *, attention_mask)` (`runtime/sinks.py` binds each to its tap).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch

from expc.runtime.finite_watch import FiniteWatch


class State(Protocol):
    """A resumable, mergeable accumulator behind one plan entry; see the module docstring."""

    finite: FiniteWatch

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None: ...

    def merge(self, other: State) -> None: ...

    def result(self) -> dict[str, torch.Tensor]: ...

    def take_result(self) -> dict[str, torch.Tensor]:
        """`result()`; a state holding large tensors also lets go of them (see above)."""
        return self.result()
