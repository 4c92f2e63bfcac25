"""Every operation of an edit against a float64 computation written out element by element."""

import pytest
import torch
from intervene_runs import SPAN, entry, write_run

from expc.runtime.intervene.edits import build_edit, build_edits
from expc.runtime.intervene.facts import ModelFacts
from expc.runtime.intervene.results import intervention_results
from expc.runtime.intervene.sources import RunSources
from expc.runtime.intervene.units import select_units
from expc.runtime.sample_error import SampleError
from expc.runtime.sinks import BatchContext
from expc.spec import ir
from expc.spec.diagnostics import DiagnosticError

B, S, C, N = 3, 5, 6, 4
FACTS = ModelFacts(n_heads=2, n_kv_heads=1, head_dim=3, hidden_size=C, intermediate_size=8,
                   module_widths={"heads.1.layers.1.mlp.down_proj": 8})
ATTENTION = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
SAMPLES = torch.tensor([2, 0, 3])  # data-order sample of each row
COUNTS = [5, 2, 3]  # real tokens per row
FIELD = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 1, 1, 1], [0, 0, 1, 0, 0]])


def context() -> BatchContext:
    ctx = BatchContext()
    ctx.set(attention_mask=ATTENTION, field_mask=FIELD, sample_index=SAMPLES)
    return ctx


def x_value() -> torch.Tensor:
    return torch.randn(B, S, C, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def run_edit(e, x, *, n_samples=N):
    selection = select_units(e, facts=FACTS, sources=RunSources())
    edit = build_edit(selection, sources=RunSources(), context=context(), n_samples=n_samples)
    before = x.clone()
    out = edit(x)
    assert torch.equal(x, before), "the edit wrote into its input"
    assert out.shape == x.shape and out.dtype == x.dtype
    return out


def hand(x, rows, channels, value):
    """x with value(b, t, c) at every listed (row, token) pair and channel, by loops."""
    out = x.clone()
    for b, tokens in enumerate(rows):
        for t in tokens:
            for c in channels:
                out[b, t, c] = value(b, t, c)
    return out


LAST = [[4], [1], [2]]
ALL = [list(range(n)) for n in COUNTS]
FIELD_ROWS = [[1, 3], [0], [2]]  # field & real


def test_zero_at_the_last_token_of_listed_channels():
    x = x_value()
    e = entry(operation=ir.Operation(kind="zero"), channels=ir.Units(kind="list", indices=(1, 4)),
              positions=ir.Positions(kind="last"))
    assert torch.equal(run_edit(e, x), hand(x, LAST, [1, 4], lambda b, t, c: 0.0))


def test_scale_at_field_positions_of_every_channel():
    x = x_value()
    e = entry(operation=ir.Operation(kind="scale", scale=0.5),
              positions=ir.Positions(kind="field", field="m"))
    assert torch.equal(run_edit(e, x), hand(x, FIELD_ROWS, range(C),
                                            lambda b, t, c: x[b, t, c].item() * 0.5))


def test_mean_sets_the_source_dataset_mean(tmp_path):
    mean = torch.randn(C)
    run = write_run(tmp_path / "m", {"capture/head1/resid_out_1": mean})
    x = x_value()
    e = entry(operation=ir.Operation(kind="mean", run=run),
              channels=ir.Units(kind="list", indices=(0, 2, 5)))
    assert torch.equal(run_edit(e, x), hand(x, ALL, [0, 2, 5],
                                            lambda b, t, c: float(mean[c])))


@pytest.mark.parametrize("scale", [None, 2.5])
def test_add_one_vector(tmp_path, scale):
    v = torch.randn(C)
    run = write_run(tmp_path / "v", {"capture/diff_1": v})
    x = x_value()
    e = entry(operation=ir.Operation(kind="add", run=run, key="capture/diff_1", scale=scale),
              positions=ir.Positions(kind="list", indices=(0, -1)))
    s = 1.0 if scale is None else scale
    rows = [[0, n - 1] for n in COUNTS]
    assert torch.allclose(run_edit(e, x), hand(x, rows, range(C),
                                               lambda b, t, c: x[b, t, c].item() + s * float(v[c])),
                          rtol=0, atol=1e-15)


def test_add_one_vector_per_sample_in_data_order(tmp_path):
    v = torch.randn(N, C)
    run = write_run(tmp_path / "v", {"rows": v})
    x = x_value()
    e = entry(operation=ir.Operation(kind="add", run=run, key="rows", scale=-1.0),
              channels=ir.Units(kind="list", indices=(3,)))
    expected = hand(x, ALL, [3], lambda b, t, c: x[b, t, c].item()
                    - float(v[int(SAMPLES[b]), c]))
    assert torch.allclose(run_edit(e, x), expected, rtol=0, atol=1e-15)


def _patch_run(tmp_path, counts):
    full = torch.randn(N, 6, C)  # the source's longest sample has 6 tokens: cut to S = 5
    run = write_run(tmp_path / "p", {"capture/resid_out_1": full,
                                     "meta/token_count": torch.tensor(counts)},
                    aggregates={"capture/resid_out_1": "full"})
    return run, full


def test_patch_takes_the_same_samples_tokens(tmp_path):
    run, full = _patch_run(tmp_path, [2, 4, 5, 3])  # samples 2, 0, 3 have 5, 2, 3 tokens
    x = x_value()
    e = entry(operation=ir.Operation(kind="patch", run=run),
              channels=ir.Units(kind="list", indices=(1, 2)))
    expected = hand(x, ALL, [1, 2], lambda b, t, c: float(full[int(SAMPLES[b]), t, c]))
    assert torch.equal(run_edit(e, x), expected)


def test_patch_pads_a_shorter_source_sequence(tmp_path):
    full = torch.randn(N, 3, C)
    run = write_run(tmp_path / "p", {"capture/resid_out_1": full,
                                     "meta/token_count": torch.tensor([2, 4, 3, 3])})
    x = x_value()
    e = entry(operation=ir.Operation(kind="patch", run=run),
              positions=ir.Positions(kind="first"))
    ctx = BatchContext()
    ctx.set(attention_mask=ATTENTION[1:], field_mask=None, sample_index=SAMPLES[1:])
    edit = build_edit(select_units(e, facts=FACTS, sources=RunSources()),
                      sources=RunSources(), context=ctx, n_samples=N)
    out = edit(x[1:])
    expected = hand(x[1:], [[0], [0]], range(C),
                    lambda b, t, c: float(full[int(SAMPLES[1 + b]), t, c]))
    assert torch.equal(out, expected)


def test_patch_names_the_first_sample_whose_token_count_differs(tmp_path):
    run, _ = _patch_run(tmp_path, [2, 4, 5, 4])  # sample 3 has 4 tokens here, 3 in the batch
    e = entry(operation=ir.Operation(kind="patch", run=run))
    with pytest.raises(SampleError) as excinfo:
        run_edit(e, x_value())
    assert excinfo.value.sample == 3 and run in excinfo.value.message


def test_patch_ignores_counts_of_rows_it_does_not_patch(tmp_path):
    run, full = _patch_run(tmp_path, [2, 4, 5, 4])
    x = x_value()
    e = entry(operation=ir.Operation(kind="patch", run=run),
              positions=ir.Positions(kind="list", indices=(3,)))
    # only row 0 (5 tokens) has position 3 ... rows 1, 2 lack it: a position error first
    with pytest.raises(SampleError) as excinfo:
        run_edit(e, x)
    assert excinfo.value.code == "intervention-positions"
    e = entry(operation=ir.Operation(kind="patch", run=run),
              positions=ir.Positions(kind="field", field="m"))
    ctx = BatchContext()
    field = FIELD.clone()
    field[2] = 0  # row 2 (sample 3, the mismatching one) patches nothing
    ctx.set(attention_mask=ATTENTION, field_mask=field, sample_index=SAMPLES)
    edit = build_edit(select_units(e, facts=FACTS, sources=RunSources()),
                      sources=RunSources(), context=ctx, n_samples=N)
    expected = hand(x, [[1, 3], [0], []], range(C),
                    lambda b, t, c: float(full[int(SAMPLES[b]), t, c]))
    assert torch.equal(edit(x), expected)


def test_patch_source_with_another_sample_count_is_a_diagnostic(tmp_path):
    run, _ = _patch_run(tmp_path, [2, 4, 5, 3])
    e = entry(operation=ir.Operation(kind="patch", run=run, span=SPAN))
    with pytest.raises(DiagnosticError) as excinfo:
        run_edit(e, x_value(), n_samples=7)
    assert "4 samples" in str(excinfo.value) and "7" in str(excinfo.value)
    assert excinfo.value.diagnostics[0].span == SPAN


def test_mean_on_a_module_is_a_diagnostic(tmp_path):
    e = entry(operation=ir.Operation(kind="mean", run="x"), kind="linear",
              target="mlp.down_proj")
    with pytest.raises(DiagnosticError, match="not a capture site"):
        run_edit(e, torch.zeros(B, S, 8, dtype=torch.float64))


def test_trailing_dims_are_flattened_into_channels():
    x = torch.randn(B, S, 2, 3, dtype=torch.float64)
    e = entry(operation=ir.Operation(kind="zero"), channels=ir.Units(kind="list", indices=(4,)),
              positions=ir.Positions(kind="first"))
    expected = x.clone()
    expected[:, 0, 1, 1] = 0.0  # channel 4 of 2 x 3 = [1, 1]
    assert torch.equal(run_edit(e, x), expected)


def test_results_store_units_and_describe_them_in_words(tmp_path):
    key = "importance/channel_contribution/head1/layers.3.mlp.down_proj/score"
    run = write_run(tmp_path / "s", {key: torch.arange(8.0)})
    facts = ModelFacts(n_heads=2, n_kv_heads=1, head_dim=3, hidden_size=C, intermediate_size=8,
                       module_widths={"heads.1.layers.3.mlp.down_proj": 8})
    e = entry(operation=ir.Operation(kind="zero"), kind="linear", target="mlp.down_proj",
              layer=3, channels=ir.Units(kind="lowest", run=run, metric="channel_contribution",
                                         fraction=0.25))
    edits, selections = build_edits((e,), facts=facts, sources=RunSources(), context=context())
    assert list(edits) == [e.key]
    tensors, descriptions = intervention_results(selections)
    result_key = "intervention/head1/mlp.down_proj_3/channels"
    assert tensors[result_key].tolist() == [0, 1] and tensors[result_key].dtype == torch.int64
    description = descriptions[result_key]
    assert description["meaning"] == ("zero-ablation of the 25% lowest channel_contribution "
                                      "channels of mlp.down_proj input at layer 3, head 1")
    assert {k: description[k] for k in ("kind", "target", "layer", "head", "field")} == {
        "kind": "intervention", "target": "mlp.down_proj", "layer": 3, "head": 1,
        "field": "channels"}


@pytest.mark.parametrize(("operation", "channels", "positions", "words"), [
    (ir.Operation(kind="mean", run="runs/a"), None, ir.Positions(kind="all"),
     "mean-ablation (dataset_mean of run runs/a) of every channel of resid_out at layer 1, "
     "head 1"),
    (ir.Operation(kind="patch", run="runs/c"), ir.Units(kind="list", indices=(2, 0)),
     ir.Positions(kind="last"),
     "patching from run runs/c of channels [2, 0] of resid_out at layer 1, head 1, "
     "last position"),
    (ir.Operation(kind="add", run="runs/s", key="capture/diff_1", scale=4.0),
     ir.Units(kind="random", count=2, seed=3), ir.Positions(kind="list", indices=(0, -1)),
     "adding 4.0 x capture/diff_1 of run runs/s of 2 random channels (seed 3) of resid_out "
     "at layer 1, head 1, positions [0, -1]"),
    (ir.Operation(kind="scale", scale=0.5), None, ir.Positions(kind="field", field="m"),
     'scaling by 0.5 of every channel of resid_out at layer 1, head 1, positions field("m")'),
])
def test_meaning_of_each_operation(operation, channels, positions, words):
    e = entry(operation=operation, channels=channels, positions=positions)
    selection = select_units(e, facts=FACTS, sources=RunSources())
    _, descriptions = intervention_results({e.key: selection})
    assert descriptions["intervention/head1/resid_out_1/channels"]["meaning"] == words
