"""Every state flags the first NaN or inf it takes in, never one at a position it excludes.

Each aggregator mode and metric is fed batches whose padding holds NaN (which must not
count), then a batch with a NaN at a real token; the watch must name that batch (and row,
for per-sample values). `check_finite` must name the earliest place over all states.
"""

from __future__ import annotations

import pytest
import torch

from expc.compiler.plan import CaptureEntry, MetricEntry, Plan
from expc.models.hydra_split import HydraSplit
from expc.runtime.aggregate.create import create_aggregator
from expc.runtime.finite_watch import NonFinite
from expc.runtime.importance.create import METRICS, create_metric
from expc.runtime.data.sources import Origin
from expc.runtime.nonfinite import NonFiniteError, check_finite, nonfinite_diagnostic
from expc.spec.vocabulary import MASKS

from test_aggregators import padded_batch
from test_importance import HEAD_DIM, N_KV, make_batches, output_of, weight

MODES = ("mean", "sum", "max", "full", "dataset_mean")


def aggregator_batches(count: int = 4):
    generator = torch.Generator().manual_seed(3)
    return [padded_batch([4, 2, 3], 5, left=bool(index % 2), generator=generator,
                         nan_padding=True) for index in range(count)]


@pytest.mark.parametrize("mask", [m for m in MASKS if m != "field"])
@pytest.mark.parametrize("mode", MODES)
def test_nan_padding_is_never_flagged(mode, mask):
    aggregator = create_aggregator(mode=mode, mask=mask)
    for hidden, attention, _ in aggregator_batches():
        aggregator.add(hidden, attention_mask=attention)
    assert aggregator.finite.first() is None
    assert bool(torch.isfinite(torch.cat(aggregator.finite.sums())).all())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("mode", MODES)
def test_a_real_token_that_is_not_finite_is_flagged_at_its_batch_and_row(mode, bad):
    aggregator = create_aggregator(mode=mode)
    for index, (hidden, attention, _) in enumerate(aggregator_batches()):
        if index == 2:
            hidden[1, attention[1].nonzero()[-1, 0], 3] = bad
        aggregator.add(hidden, attention_mask=attention)
    row = None if mode == "dataset_mean" else 1
    if mode == "max" and bad < 0:  # -inf never wins a max: it does not reach the result
        assert aggregator.finite.first() is None
    else:
        assert aggregator.finite.first() == NonFinite(batch=2, row=row)
    aggregator.finite.clear()
    assert aggregator.finite.first() is None and aggregator.finite.sums() == []


def test_a_loaded_state_continues_the_batch_numbers_and_starts_a_fresh_queue():
    first, second = create_aggregator(mode="mean"), create_aggregator(mode="mean")
    batches = aggregator_batches()
    for hidden, attention, _ in batches[:2]:
        first.add(hidden, attention_mask=attention)
    second.load_state_dict(first.state_dict())
    hidden, attention, _ = batches[2]
    hidden[0, 0, 0] = float("nan")
    second.add(hidden, attention_mask=attention)
    assert second.finite.first() == NonFinite(batch=2, row=0)


def build_metric(name: str):
    params = {"iterations": 2} if name == "iterative_channel" else {}
    return create_metric(name, weight=weight(), params=params, n_kv_heads=N_KV,
                         head_dim=HEAD_DIM, total_batches=5)


def feed(metric, batches) -> None:
    w = weight()
    for x, mask in batches:
        metric.update(x, output_of(metric, x, w), attention_mask=mask)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metrics_ignore_nan_padding_and_flag_a_real_nan(name):
    clean = build_metric(name)
    feed(clean, make_batches())  # their padding is NaN
    assert clean.finite.first() is None
    batches = make_batches()
    x, mask = batches[3]
    x[1, mask[1].nonzero()[0, 0], 2] = float("nan")
    metric = build_metric(name)
    feed(metric, batches)
    assert metric.finite.first() == NonFinite(batch=3, row=1 if metric.rows else None)


def entry(key: str, layer: int | None, *, site: str = "resid_out") -> CaptureEntry:
    return CaptureEntry(key=key, site=site, name=site, layer=layer, head=None, mode="mean")


def test_check_finite_names_the_earliest_batch_then_the_shallowest_state():
    plan = Plan(layout=HydraSplit(n_layers=4, trunk=4),
                captures=(entry("capture/logits", None, site="logits"),
                          entry("capture/resid_out_2", 2), entry("capture/resid_out_1", 1),
                          entry("capture/embed", None, site="embed")),
                metrics=(MetricEntry(key="importance/l2_norm/layers.0.mlp.down_proj",
                                     metric="l2_norm", module="mlp.down_proj",
                                     module_path="layers.0.mlp.down_proj", layer=0, head=None),))
    states = {key: create_aggregator(mode="mean") for key in plan.keys}
    batches = aggregator_batches(3)
    for key, state in states.items():
        for number, (hidden, attention, _) in enumerate(batches):
            hidden = hidden.clone()
            if (key, number) in {("capture/logits", 1), ("capture/resid_out_2", 1),
                                 ("capture/resid_out_1", 2), ("capture/embed", 2)}:
                hidden[2, attention[2].nonzero()[0, 0], 0] = float("inf")
            state.add(hidden, attention_mask=attention)
    with pytest.raises(NonFiniteError) as caught:
        check_finite(plan, states)
    assert caught.value.entry.key == "capture/resid_out_2"  # batch 1; logits is deeper
    assert caught.value.at == NonFinite(batch=1, row=2)
    check_finite(plan, states)  # the queues were emptied


def test_the_diagnostic_names_a_sample_or_a_batch_of_samples():
    lines = {10: 11, 11: 12, 12: 13}
    capture = entry("capture/head1/resid_out_3", 3)
    capture = CaptureEntry(**{**{f: getattr(capture, f) for f in
                                 ("key", "site", "name", "layer", "mode")}, "head": 1})
    row = nonfinite_diagnostic(NonFiniteError(capture, NonFinite(batch=4, row=1)),
                               samples=[10, 11, 12], origin=lambda s: Origin(path="data.jsonl", line=lines[s]))
    (diagnostic,) = row.diagnostics
    assert (diagnostic.span.path, diagnostic.span.line, diagnostic.code) == (
        "data.jsonl", 12, "nonfinite")
    assert diagnostic.message == ("sample 11: capture/head1/resid_out_3 (layer 3, head 1) is "
                                  "NaN or inf for this sample")
    batch = nonfinite_diagnostic(NonFiniteError(capture, NonFinite(batch=4)),
                                 samples=[10, 11, 12], origin=lambda s: Origin(path="data.jsonl", line=lines[s]))
    assert batch.diagnostics[0].span.line == 11
    assert "batch 4, samples 10, 11, 12 " in batch.diagnostics[0].message
    table = nonfinite_diagnostic(NonFiniteError(capture, NonFinite(batch=4, row=1)),
                                 samples=[10, 11, 12],
                                 origin=lambda s: Origin(path="part-0.parquet", row=s + 100))
    assert table.diagnostics[0].message.startswith("row 111: sample 11: ")  # a table's row
