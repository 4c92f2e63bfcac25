"""Aggregators against the reductions written out token by token with plain torch.

Each reference loops over samples and picks the tokens by hand (the non-padding ones, the
last/first non-padding one, or those a field marks), so it shares no code with the
vectorised masks in `expc.runtime.aggregate`. Batches are padded on the left and right;
the first batch's padding holds NaN and the others' large finite junk, so both the fast
(matrix product) and the safe (`where`) summing paths are exercised, and any padding that
leaked into a result would show.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save

from expc.runtime.aggregate.create import EmptyMaskError, create_aggregator

FEATURES = 5


def padded_batch(lengths: list[int], seq: int, *, left: bool, generator: torch.Generator,
                 features: tuple[int, ...] = (FEATURES,), nan_padding: bool = False):
    """A batch whose row i has `lengths[i]` real tokens, padded left or right to `seq`."""
    hidden = torch.randn(len(lengths), seq, *features, generator=generator, dtype=torch.float64)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, length in enumerate(lengths):
        if left:
            mask[row, seq - length:] = 1
        else:
            mask[row, :length] = 1
    junk = float("nan") if nan_padding else 1e3 * torch.randn((), generator=generator).item()
    hidden[mask == 0] = junk  # padding must never leak into a result
    field = (torch.rand(len(lengths), seq, generator=generator) > 0.4).long()
    for row in range(len(lengths)):  # every row keeps at least one marked real token
        field[row, mask[row].nonzero()[0, 0]] = 1
    return hidden, mask, field


def batches(*, left: bool, seed: int = 0, features: tuple[int, ...] = (FEATURES,)):
    generator = torch.Generator().manual_seed(seed)
    shapes = [([3, 5, 1], 6), ([2, 4], 4), ([7, 7, 3, 1], 7)]
    return [padded_batch(lengths, seq, left=left, generator=generator, features=features,
                         nan_padding=index == 0)
            for index, (lengths, seq) in enumerate(shapes)]


def reference_positions(mask_row: torch.Tensor, field_row: torch.Tensor, kind: str) -> list[int]:
    real = [s for s in range(len(mask_row)) if mask_row[s] == 1]
    if kind == "attention":
        return real
    if kind == "last":
        return [real[-1]]
    if kind == "first":
        return [real[0]]
    return [s for s in real if field_row[s] == 1]


def reference_rows(data, kind: str, reduce) -> torch.Tensor:
    rows = []
    for hidden, mask, field in data:
        for b in range(hidden.shape[0]):
            tokens = hidden[b, reference_positions(mask[b], field[b], kind)]  # [T, *F]
            rows.append(reduce(tokens))
    return torch.stack(rows)


def run(mode: str, kind: str, data, **options):
    field = "marks" if kind == "field" else None
    aggregator = create_aggregator(mode=mode, mask=kind, field=field, **options)
    for hidden, mask, marks in data:
        aggregator.add(hidden, attention_mask=mask, field_mask={"marks": marks})
    return aggregator


REDUCERS = {
    "mean": lambda tokens: tokens.sum(0) / tokens.shape[0],
    "sum": lambda tokens: tokens.sum(0),
    "max": lambda tokens: tokens.max(0).values,
}
KINDS = ("attention", "last", "first", "field")


@pytest.mark.parametrize("left", [False, True], ids=["right_pad", "left_pad"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", sorted(REDUCERS))
def test_per_sample_reductions_match_token_by_token_reference(mode, kind, left):
    data = batches(left=left)
    result = run(mode, kind, data).result()
    assert set(result) == {""}
    expected = reference_rows(data, kind, REDUCERS[mode])
    assert result[""].shape == (9, FEATURES)
    torch.testing.assert_close(result[""], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("left", [False, True], ids=["right_pad", "left_pad"])
@pytest.mark.parametrize("kind", KINDS)
def test_dataset_mean_matches_mean_and_population_variance_of_all_tokens(kind, left):
    data = batches(left=left)
    result = run("dataset_mean", kind, data).result()
    tokens = torch.cat([hidden[b, reference_positions(mask[b], field[b], kind)]
                        for hidden, mask, field in data for b in range(hidden.shape[0])])
    assert int(result[".count"]) == tokens.shape[0]
    torch.testing.assert_close(result[""], tokens.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result[".var"], tokens.var(0, unbiased=False),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("left", [False, True], ids=["right_pad", "left_pad"])
@pytest.mark.parametrize("kind", ["attention", "last"])
def test_full_keeps_selected_tokens_in_place_padded_to_longest(kind, left):
    data = batches(left=left)
    result = run("full", kind, data).result()
    values, mask = result[""], result[".mask"]
    assert values.shape == (9, 7, FEATURES) and mask.shape == (9, 7)
    n = 0
    for hidden, attention, field in data:
        for b in range(hidden.shape[0]):
            chosen = reference_positions(attention[b], field[b], kind)
            for s in range(7):
                if s in chosen:
                    assert bool(mask[n, s])
                    assert torch.equal(values[n, s], hidden[b, s])
                else:
                    assert not bool(mask[n, s])
                    assert torch.equal(values[n, s], torch.zeros(FEATURES, dtype=values.dtype))
            n += 1


def test_attention_pattern_layout_reduces_over_queries_and_pads_key_length():
    data = batches(left=True, features=(2, 7))  # [B, S_q, n_heads, S_k]
    data = [(hidden[..., : hidden.shape[1]], mask, field) for hidden, mask, field in data]
    result = run("mean", "attention", data).result()
    assert result[""].shape == (9, 2, 7)
    expected = [torch.nn.functional.pad(REDUCERS["mean"](hidden[b][mask[b] == 1]),
                                        (0, 7 - hidden.shape[1]))
                for hidden, mask, _ in data for b in range(hidden.shape[0])]
    torch.testing.assert_close(result[""], torch.stack(expected), rtol=1e-12, atol=1e-12)


ALL_MODES = ["full", "mean", "sum", "max", "dataset_mean"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_merge_of_two_halves_equals_one_pass(mode):
    data = batches(left=True) + batches(left=False, seed=1)
    whole = run(mode, "attention", data).result()
    first, second = run(mode, "attention", data[:2]), run(mode, "attention", data[2:])
    first.merge(second)
    merged = first.result()
    assert merged.keys() == whole.keys()
    for suffix in whole:
        torch.testing.assert_close(merged[suffix], whole[suffix], rtol=1e-12, atol=1e-12)
    assert first.batches == len(data)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_merge_is_associative(mode):
    data = batches(left=True) + batches(left=False, seed=1)
    parts = [run(mode, "attention", data[i:i + 2]) for i in (0, 2, 4)]
    left_first = [run(mode, "attention", data[i:i + 2]) for i in (0, 2, 4)]
    parts[1].merge(parts[2])
    parts[0].merge(parts[1])  # a + (b + c)
    left_first[0].merge(left_first[1])
    left_first[0].merge(left_first[2])  # (a + b) + c
    for suffix, value in parts[0].result().items():
        torch.testing.assert_close(value, left_first[0].result()[suffix], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_state_dict_round_trip_through_safetensors_then_continue(mode):
    data = batches(left=True) + batches(left=False, seed=1)
    whole = run(mode, "last", data).result()
    before = run(mode, "last", data[:3])
    restored = create_aggregator(mode=mode, mask="last")
    restored.load_state_dict(load(save(before.state_dict())))
    for hidden, mask, _ in data[3:]:
        restored.add(hidden, attention_mask=mask)
    for suffix, value in whole.items():
        torch.testing.assert_close(restored.result()[suffix], value, rtol=1e-12, atol=1e-12)
    assert restored.batches == len(data)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("eager", [True, False], ids=["eager", "deferred"])
def test_all_zero_mask_row_names_the_row(mode, eager):
    hidden = torch.randn(3, 4, FEATURES)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    aggregator = create_aggregator(mode=mode, eager_checks=eager)
    aggregator.add(hidden, attention_mask=mask)
    mask[2] = 0
    if eager:
        with pytest.raises(EmptyMaskError) as caught:
            aggregator.add(hidden, attention_mask=mask)
    else:
        aggregator.add(hidden, attention_mask=mask)  # nothing read back from the device yet
        with pytest.raises(EmptyMaskError) as caught:
            aggregator.result()
    assert isinstance(caught.value, ValueError)
    assert (caught.value.row, caught.value.batch) == (2, 1)
    assert "row 2 of batch 1" in str(caught.value)


def test_field_mask_row_with_only_padding_marked_is_empty():
    hidden = torch.randn(2, 3, FEATURES)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    marks = torch.tensor([[0, 0, 1], [0, 1, 0]])  # row 0 marks only its padding token
    aggregator = create_aggregator(mode="sum", mask="field", field="marks")
    with pytest.raises(EmptyMaskError) as caught:
        aggregator.add(hidden, attention_mask=mask, field_mask=marks)
    assert caught.value.row == 0 and 'field("marks")' in str(caught.value)


@pytest.mark.parametrize("options, message", [
    ({"mode": "median"}, "unknown aggregation mode 'median'"),
    ({"mode": "none"}, "keeps nothing"),
    ({"mode": "mean", "mask": "middle"}, "unknown mask 'middle'"),
    ({"mode": "mean", "mask": "field"}, "field name"),
    ({"mode": "mean", "field": "marks"}, "field name"),
])
def test_bad_options_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        create_aggregator(**options)


def test_field_mask_missing_from_batch_is_a_value_error():
    aggregator = create_aggregator(mode="mean", mask="field", field="marks")
    with pytest.raises(ValueError, match="mask field"):
        aggregator.add(torch.randn(1, 2, 3), attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="'marks'"):
        aggregator.add(torch.randn(1, 2, 3), attention_mask=torch.ones(1, 2),
                       field_mask={"other": torch.ones(1, 2)})


def test_shape_mismatch_and_mixed_merge_are_value_errors():
    aggregator = create_aggregator(mode="mean")
    with pytest.raises(ValueError, match="does not start with"):
        aggregator.add(torch.randn(2, 3, 4), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="cannot merge"):
        aggregator.merge(create_aggregator(mode="sum"))
    with pytest.raises(ValueError, match="cannot merge"):
        aggregator.merge(create_aggregator(mode="mean", mask="last"))


def test_reductions_of_half_precision_accumulate_in_float32():
    hidden = torch.full((1, 600, 2), 1.0, dtype=torch.bfloat16)
    result = run("sum", "attention", [(hidden, torch.ones(1, 600), torch.ones(1, 600))])
    assert result.result()[""].dtype == torch.float32
    assert torch.equal(result.result()[""], torch.full((1, 2), 600.0))


def test_no_mask_means_attention():
    data = batches(left=True)
    unnamed = run_with(create_aggregator(mode="mean", mask=None), data)
    named = run_with(create_aggregator(mode="mean", mask="attention"), data)
    assert torch.equal(unnamed.result()[""], named.result()[""])


def run_with(aggregator, data):
    for hidden, mask, _ in data:
        aggregator.add(hidden, attention_mask=mask)
    return aggregator


@pytest.mark.parametrize("mode", ALL_MODES)
def test_merging_an_empty_state_changes_nothing(mode):
    data = batches(left=False)
    filled = run(mode, "attention", data)
    before = filled.result()
    filled.merge(create_aggregator(mode=mode))
    empty = create_aggregator(mode=mode)
    empty.merge(run(mode, "attention", data))
    for suffix, value in before.items():
        assert torch.equal(filled.result()[suffix], value)
        assert torch.equal(empty.result()[suffix], value)


@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(ALL_MODES), kind=st.sampled_from(KINDS),
       cuts=st.lists(st.integers(min_value=0, max_value=6), max_size=3))
def test_any_split_merged_in_order_equals_one_pass(mode, kind, cuts):
    data = batches(left=True) + batches(left=False, seed=1)
    bounds = [0, *sorted(cuts), len(data)]
    parts = [run(mode, kind, data[a:b]) for a, b in zip(bounds, bounds[1:])]
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    for suffix, value in run(mode, kind, data).result().items():
        torch.testing.assert_close(merged.result()[suffix], value, rtol=1e-12, atol=1e-12)


def test_state_keeps_no_autograd_graph():
    hidden = torch.randn(2, 3, FEATURES, requires_grad=True)
    for mode in ALL_MODES:
        aggregator = create_aggregator(mode=mode)
        aggregator.add(hidden * 2, attention_mask=torch.ones(2, 3))
        assert not any(t.requires_grad for t in aggregator.result().values())


@pytest.mark.parametrize("mode", ALL_MODES)
def test_fed_under_inference_mode_then_merged_and_finished_outside(mode):
    data = batches(left=True)
    expected = run(mode, "attention", data + data).result()
    with torch.inference_mode():
        first, second = run(mode, "attention", data), run(mode, "attention", data)
    first.merge(second)
    restored = create_aggregator(mode=mode)
    restored.load_state_dict(first.state_dict())
    with torch.inference_mode():
        for hidden, mask, _ in data:
            restored.add(hidden, attention_mask=mask)
    for suffix, value in expected.items():
        torch.testing.assert_close(first.result()[suffix], value, rtol=1e-12, atol=1e-12)
    for suffix, value in run(mode, "attention", data * 3).result().items():
        torch.testing.assert_close(restored.result()[suffix], value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["mean", "sum", "max", "full", "dataset_mean"])
def test_take_result_hands_the_tensors_over_and_leaves_the_state_empty(mode):
    generator = torch.Generator().manual_seed(7)
    taken, kept = create_aggregator(mode=mode), create_aggregator(mode=mode)
    for lengths in ([3, 1], [2, 4]):
        hidden, mask, _ = padded_batch(lengths, 4, left=False, generator=generator)
        taken.add(hidden, attention_mask=mask)
        kept.add(hidden, attention_mask=mask)
    found = taken.take_result()
    expected = kept.result()
    assert found.keys() == expected.keys()
    assert all(torch.equal(found[k], expected[k]) for k in expected)
    assert taken.result() == {}  # nothing left behind to hold the results a second time


def test_dataset_mean_of_a_key_axis_that_follows_the_batch_pads_it_with_zeros():
    """An attention pattern's features `[heads, S_k]` grow with the batch's length: the
    running moments are those of every token's pattern zero-padded to the longest key axis
    (written out in float64), in whichever order the batches come and however they merge."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 3), (3, 5), (1, 4)]  # [B, S] per batch; a token's pattern is [2, S]
    data = [(torch.rand(b, s, 2, s, generator=gen, dtype=torch.float64),
             torch.ones(b, s, dtype=torch.long)) for b, s in shapes]
    padded = torch.cat([torch.nn.functional.pad(h, (0, 5 - h.shape[-1])).flatten(0, 1)
                        for h, _ in data])  # every token, [N, 2, 5]
    for order in ([0, 1, 2], [2, 0, 1]):
        aggregator = create_aggregator(mode="dataset_mean")
        for k in order[:2]:
            aggregator.add(data[k][0], attention_mask=data[k][1])
        last = create_aggregator(mode="dataset_mean")
        last.add(data[order[2]][0], attention_mask=data[order[2]][1])
        aggregator.merge(last)
        result = aggregator.result()
        torch.testing.assert_close(result[""].double(), padded.mean(0), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(result[".var"].double(), padded.var(0, unbiased=False),
                                   rtol=1e-10, atol=1e-12)
