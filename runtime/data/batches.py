"""Length-bucketed, deterministic batches that a resumed or sharded run can re-create cheaply.

Padding every batch to its longest sample wastes compute when short and long prompts mix.
`plan_batches` cuts the data into windows of `bucket_batches * batch_size` samples in data
order and sorts each window by length (longest first, ties in data order) before cutting it
into batches, so neighbours in a batch have similar lengths while memory per window stays
bounded. The plan is a pure function of the sample lengths; the run plans one window at a
time as it reads it (`stream.py`). Every batch carries `sample_index`, so per-sample
results go back to data order with `restore_data_order`.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import torch

from expc.runtime.data.load import TokenizedData
from expc.spec.vocabulary import DEFAULT_WINDOW


@attrs.frozen(kw_only=True)
class Batch:
    """One padded batch, right-padded to its longest sample."""

    number: int  # position of this batch in its plan (the resume cursor counts these)
    sample_index: torch.Tensor  # [B] int64, index of each row's sample in data order
    input_ids: torch.Tensor  # [B, S] int64, pad_token_id after each sample's end
    attention_mask: torch.Tensor  # [B, S] int64, 1 on real tokens, 0 on padding
    field_mask: torch.Tensor | None  # [B, S] int64 0/1 from the data's mask field, or None
    token_count: torch.Tensor  # [B] int64, real tokens per row
    token_fields: dict[str, torch.Tensor] = attrs.field(factory=dict)  # name -> [B] int64 ids

    @property
    def size(self) -> int:
        return self.sample_index.numel()


@attrs.frozen(kw_only=True)
class BatchPlan:
    """Which samples go into which batch, in run order."""

    order: torch.Tensor  # [N'] int64, sample indices in the order batches visit them
    bounds: torch.Tensor  # [n_batches + 1] int64, batch k is order[bounds[k]:bounds[k+1]]

    def __len__(self) -> int:
        return self.bounds.numel() - 1

    def batch(self, number: int) -> torch.Tensor:  # [B] int64
        return self.order[int(self.bounds[number]):int(self.bounds[number + 1])]

    @property
    def n_samples(self) -> int:
        return self.order.numel()

    def samples_before(self, number: int) -> int:
        """How many samples the first `number` batches hold."""
        return int(self.bounds[number])


def plan_batches(lengths: torch.Tensor, *, batch_size: int,
                 bucket_batches: int = DEFAULT_WINDOW) -> BatchPlan:
    """Bucket samples by length within windows of `bucket_batches` batches; deterministic.

    `lengths` is `[N]` tokens per sample; `bucket_batches = 1` keeps data order inside
    every batch-sized window (no bucketing beyond one batch).
    """
    if batch_size < 1 or bucket_batches < 1:
        raise ValueError(f"batch_size ({batch_size}) and bucket_batches ({bucket_batches}) "
                         "must be positive")
    n = lengths.numel()
    window = batch_size * bucket_batches
    pieces = []
    for start in range(0, n, window):
        chunk = lengths[start:start + window]
        ranked = torch.sort(chunk, descending=True, stable=True).indices
        pieces.append(ranked + start)
    order = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64)
    sizes = [min(batch_size, n - s) for s in range(0, n, batch_size)]
    bounds = torch.cumsum(torch.tensor([0] + sizes, dtype=torch.int64), 0)
    return BatchPlan(order=order.to(torch.int64), bounds=bounds)


def collate(data: TokenizedData, indices: torch.Tensor, *, pad_token_id: int | None,
            number: int = 0) -> Batch:
    """Pad the samples `indices` `[B]` (positions within `data`) into one batch (pad id 0
    when None); its `sample_index` counts from the data's `first` sample."""
    starts = data.offsets[indices]  # [B]
    counts = data.offsets[indices + 1] - starts  # [B]
    width = int(counts.max()) if counts.numel() else 0
    positions = torch.arange(width, dtype=torch.int64)  # [S]
    attention = (positions[None, :] < counts[:, None]).to(torch.int64)  # [B, S]
    gather_at = (starts[:, None] + positions[None, :]).clamp(max=max(data.n_tokens - 1, 0))
    pad = 0 if pad_token_id is None else pad_token_id
    input_ids = torch.where(attention.bool(), data.token_ids[gather_at].to(torch.int64),
                            pad)  # [B, S]
    field_mask = None
    if data.field_mask is not None:
        field_mask = torch.where(attention.bool(), data.field_mask[gather_at].to(torch.int64),
                                 0)  # [B, S]
    return Batch(number=number, sample_index=indices + data.first, input_ids=input_ids,
                 attention_mask=attention, field_mask=field_mask, token_count=counts,
                 token_fields={name: ids[indices] for name, ids in data.token_fields.items()})


def iter_batches(data: TokenizedData, plan: BatchPlan, *, pad_token_id: int | None,
                 start: int = 0) -> Iterator[Batch]:
    """Batches `start, start + 1, ...` of `plan`, collated one at a time."""
    for number in range(start, len(plan)):
        yield collate(data, plan.batch(number), pad_token_id=pad_token_id, number=number)


def restore_data_order(rows: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
    """Rows `[N, ...]` in run order -> the same rows in data order (row i is sample i).

    `sample_index` `[N]` names each row's sample, as concatenated from the batches; it must
    be a permutation of `0..N-1`.
    """
    expected = torch.arange(rows.shape[0], dtype=sample_index.dtype)
    if sample_index.shape != expected.shape or not torch.equal(sample_index.sort().values,
                                                               expected):
        raise ValueError("sample_index is not a permutation of the rows")
    out = torch.empty_like(rows)
    out[sample_index] = rows
    return out
