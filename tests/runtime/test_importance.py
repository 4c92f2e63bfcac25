"""Importance metrics against their formulas written out token by token with plain torch.

Padding tokens hold NaN, so any padding that leaked into a score would show. Batches are
padded on the left and on the right; the references pick real tokens by looping over rows.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save

from expc.runtime.importance.create import METRICS, create_metric
from expc.runtime.importance.iterative_contributions import PrunedGrams, direct, through_pruned
from expc.spec import vocabulary

D_IN, D_OUT = 12, 6
N_KV, HEAD_DIM = 3, 2  # 12 input channels = 6 query heads of 2, in 3 KV groups of 4


def make_batches(*, seed: int = 0, count: int = 5):
    """`count` batches of (x [B, S, D_IN], mask [B, S]) alternating left and right padding."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in range(count):
        rows, seq = 2 + index % 2, 3 + index % 3
        x = torch.randn(rows, seq, D_IN, generator=generator, dtype=torch.float64)
        lengths = torch.randint(1, seq + 1, (rows,), generator=generator)
        lengths[0] = seq
        mask = torch.zeros(rows, seq, dtype=torch.long)
        for row, length in enumerate(lengths.tolist()):
            if index % 2:
                mask[row, seq - length:] = 1
            else:
                mask[row, :length] = 1
        x[mask == 0] = float("nan")
        out.append((x, mask))
    return out


def weight(seed: int = 7) -> torch.Tensor:
    return torch.randn(D_OUT, D_IN, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def real_tokens(x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Each row's real tokens, `[T_b, C]`, found by looping."""
    return [torch.stack([x[b, s] for s in range(x.shape[1]) if mask[b, s] == 1])
            for b in range(x.shape[0])]


def output_of(metric, x, w, bias=None):
    """What the metric reads beside x: a module's output `x W^T (+ b)`, or for a metric of
    whole layers (`block_influence`) a layer's output of x's width, `x + tanh(x W^T) W`."""
    y = x @ w.T if bias is None else x @ w.T + bias
    return x + torch.tanh(y) @ w if metric.name == "block_influence" else y


def feed(metric, batches, w, bias=None):
    for x, mask in batches:
        metric.update(x, output_of(metric, x, w, bias), attention_mask=mask)
    return metric


def build(name, w=None, params=None, total_batches=5):
    return create_metric(name, weight=weight() if w is None else w, params=params or {},
                         n_kv_heads=N_KV, head_dim=HEAD_DIM, total_batches=total_batches)


def test_block_influence_is_one_minus_mean_cosine_over_real_tokens():
    batches, w = make_batches(), weight()
    metric = feed(build("block_influence"), batches, w)
    cosines = [torch.dot(x_t, y_t) / (x_t.norm() * y_t.norm())
               for x, mask in batches
               for xs, ys in zip(real_tokens(x, mask), real_tokens(output_of(metric, x, w), mask))
               for x_t, y_t in zip(xs, ys)]
    expected = 1 - torch.stack(cosines).mean()
    assert metric.result()["score"].shape == ()
    torch.testing.assert_close(metric.result()["score"], expected.float())
    assert metric.progress()["tokens"] == len(cosines)


def test_block_influence_of_a_layer_that_only_rescales_is_zero():
    x, mask = make_batches()[0]
    metric = build("block_influence")
    metric.update(x, 3 * x, attention_mask=mask)
    assert abs(float(metric.result()["score"])) < 1e-6


def test_block_influence_refuses_input_and_output_of_other_widths():
    x, mask = make_batches()[0]
    with pytest.raises(ValueError, match="same shape"):
        build("block_influence").update(x, x @ weight().T, attention_mask=mask)


def test_block_influence_split_merged_or_resumed_equals_one_pass_bit_for_bit():
    """Token sums are float64 and the score is rounded to float32 once, at the end."""
    batches, w = make_batches(count=6), weight()
    whole = feed(build("block_influence"), batches, w).result()["score"]
    for cut in range(1, 6):
        first = feed(build("block_influence"), batches[:cut], w)
        first.merge(feed(build("block_influence"), batches[cut:], w))
        assert torch.equal(first.result()["score"], whole), cut
        resumed = build("block_influence")
        resumed.load_state_dict(load(save(feed(build("block_influence"), batches[:cut],
                                                w).state_dict())))
        assert torch.equal(feed(resumed, batches[cut:], w).result()["score"], whole), cut


def test_l2_norm_is_root_of_summed_squared_sample_means():
    batches = make_batches()
    accumulated = torch.zeros(D_IN, dtype=torch.float64)
    for x, mask in batches:
        for tokens in real_tokens(x, mask):
            accumulated += (tokens.abs().sum(0) / tokens.shape[0]) ** 2
    result = feed(build("l2_norm"), batches, weight()).result()
    torch.testing.assert_close(result["score"], accumulated.sqrt().float())


def test_channel_contribution_is_column_norm_times_mean_abs_input():
    batches, w = make_batches(), weight()
    tokens = torch.cat([t for x, mask in batches for t in real_tokens(x, mask)])
    mean_abs = tokens.abs().sum(0) / tokens.shape[0]
    column_norm = torch.tensor([sum(float(w[o, j]) ** 2 for o in range(D_OUT)) ** 0.5
                                for j in range(D_IN)], dtype=torch.float64)
    result = feed(build("channel_contribution"), batches, w).result()
    torch.testing.assert_close(result["score"], (column_norm * mean_abs).float())
    torch.testing.assert_close(result["weight_norm"], column_norm.float())
    torch.testing.assert_close(result["activation_mean_abs"], mean_abs.float())


@pytest.mark.parametrize("optimize_for", ["memory", "latency"])
def test_kv_head_contribution_is_mean_norm_of_each_groups_output(optimize_for):
    batches, w = make_batches(), weight()
    width = D_IN // N_KV
    per_token = []
    for x, mask in batches:
        for tokens in real_tokens(x, mask):
            for token in tokens:
                per_token.append(torch.stack([
                    (w[:, k * width:(k + 1) * width] @ token[k * width:(k + 1) * width]).norm()
                    for k in range(N_KV)]))
    expected = torch.stack(per_token).mean(0)
    result = feed(build("kv_head_contribution", params={"optimize_for": optimize_for}),
                  batches, w).result()
    assert result["score"].shape == (N_KV,)
    torch.testing.assert_close(result["score"], expected.float())


def test_kv_head_memory_and_latency_agree_in_float32():
    batches = [(x.float(), mask) for x, mask in make_batches(seed=3)]
    w = weight().float()
    scores = [feed(build("kv_head_contribution", w=w, params={"optimize_for": mode}),
                   batches, w).result()["score"] for mode in ("memory", "latency")]
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-6, atol=1e-6)


def test_layernorm_contribution_is_mean_abs_output_over_real_tokens():
    batches, w = make_batches(), weight()
    outputs = torch.cat([t @ w.T for x, mask in batches for t in real_tokens(x, mask)])
    result = feed(build("layernorm_contribution", w=None), batches, w).result()
    torch.testing.assert_close(result["score"], outputs.abs().mean(0).float())


def reference_iterative(batches, w, *, iterations: int, calibration: str, bias=None):
    """Greedy rounds written out directly: every channel's `||S + X_j W_j||` per token."""
    total = len(batches)
    pruned: list[int] = []
    for round_index in range(iterations):
        members = [b for b in range(total) if b * iterations // total == round_index]
        contributions = []
        for b in members:
            x, mask = batches[b]
            for tokens in real_tokens(x, mask):
                for token in tokens:  # [D_IN]
                    y = w @ token if bias is None else w @ token + bias  # [D_OUT]
                    kept = token.clone()
                    kept[pruned] = 0.0
                    y_kept = w @ kept
                    scale = 1.0 if calibration == "none" else y_kept.norm() / (y.norm() + 1e-8)
                    s = scale * y - y_kept
                    contributions.append(torch.stack([(s + token[j] * w[:, j]).norm()
                                                      for j in range(D_IN)]))
        mean = torch.stack(contributions).mean(0)
        mean[pruned] = float("inf")
        budget = (round_index + 1) * D_IN // iterations - len(pruned)
        pruned += sorted(range(D_IN), key=lambda j: float(mean[j]))[:budget]
    return pruned


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("calibration", ["none", "scale_by_magnitude"])
@pytest.mark.parametrize("iterations", [1, 3, 5])
def test_iterative_channel_prunes_like_the_written_out_rounds(iterations, calibration,
                                                              with_bias):
    """With 12 channels into 6 outputs, calibration `none` takes the |P|-wide path while at
    most 6 are pruned and the direct one after; `scale_by_magnitude` always the direct one."""
    batches, w = make_batches(), weight()
    bias = torch.randn(D_OUT, dtype=torch.float64) if with_bias else None
    expected = reference_iterative(batches, w, iterations=iterations, calibration=calibration,
                                   bias=bias)
    metric = build("iterative_channel",
                   params={"iterations": iterations, "calibration": calibration})
    result = feed(metric, batches, w, bias).result()
    assert result["channels_importance_ascending"].tolist() == expected
    assert [result["score"][j].item() for j in expected] == list(range(D_IN))
    assert metric.progress()["rounds_closed"] == iterations


@pytest.mark.parametrize("n_pruned", [0, 2, 6, 11])
def test_both_contribution_paths_agree_token_by_token(n_pruned):
    x, mask = make_batches()[1]
    w, bias = weight(), torch.randn(D_OUT, dtype=torch.float64)
    y = x @ w.T + bias
    order = torch.randperm(D_IN, generator=torch.Generator().manual_seed(n_pruned))
    pruned, kept = order[:n_pruned], order[n_pruned:].sort().values
    real = mask.bool()
    fast = through_pruned(x, y, w, pruned, kept, PrunedGrams.of(w, pruned, kept), real)
    slow = direct(x, y, w, kept, "none")
    assert fast.shape == slow.shape == (*x.shape[:2], D_IN - n_pruned)
    torch.testing.assert_close(fast[real], slow[real], rtol=1e-9, atol=1e-9)


def test_iterative_channel_needs_a_batch_per_round():
    with pytest.raises(ValueError, match="iterations = 6 needs at least 6 batches"):
        build("iterative_channel", params={"iterations": 6}, total_batches=5)
    with pytest.raises(ValueError, match="number of batches"):
        build("iterative_channel", params={"iterations": 2}, total_batches=None)


def test_iterative_channel_result_waits_for_every_batch():
    batches, w = make_batches(), weight()
    metric = feed(build("iterative_channel", params={"iterations": 2}), batches[:3], w)
    with pytest.raises(ValueError, match="seen 3 of the run's 5 batches"):
        metric.result()
    feed(metric, batches[3:], w)
    with pytest.raises(ValueError, match="got more"):
        feed(metric, batches[:1], w)


TOKEN_METRICS = ["l2_norm", "channel_contribution", "kv_head_contribution",
                 "layernorm_contribution", "block_influence"]


@pytest.mark.parametrize("name", TOKEN_METRICS)
def test_merge_of_two_halves_equals_one_pass(name):
    batches, w = make_batches(count=6), weight()
    whole = feed(build(name), batches, w)
    first, second = feed(build(name), batches[:2], w), feed(build(name), batches[2:], w)
    first.merge(second)
    for field, value in whole.result().items():
        torch.testing.assert_close(first.result()[field], value)
    assert first.progress() == whole.progress()


@pytest.mark.parametrize("name", TOKEN_METRICS)
def test_merge_is_associative(name):
    batches, w = make_batches(count=6), weight()
    a, b, c = (feed(build(name), batches[i:i + 2], w) for i in (0, 2, 4))
    a2, b2, c2 = (feed(build(name), batches[i:i + 2], w) for i in (0, 2, 4))
    b.merge(c)
    a.merge(b)
    a2.merge(b2)
    a2.merge(c2)
    for field, value in a.result().items():
        torch.testing.assert_close(a2.result()[field], value)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(TOKEN_METRICS),
       cuts=st.lists(st.integers(min_value=0, max_value=6), max_size=3))
def test_any_split_merged_in_order_equals_one_pass(name, cuts):
    batches, w = make_batches(count=6), weight()
    bounds = [0, *sorted(cuts), len(batches)]
    parts = [feed(build(name), batches[a:b], w) for a, b in zip(bounds, bounds[1:])]
    for part in parts[1:]:
        parts[0].merge(part)
    for field, value in feed(build(name), batches, w).result().items():
        torch.testing.assert_close(parts[0].result()[field], value)


def split_rows(batch):
    x, mask = batch
    half = x.shape[0] // 2
    return (x[:half], mask[:half]), (x[half:], mask[half:])


def test_iterative_channel_merges_data_parallel_shards_at_round_boundaries():
    """Two shards take half the rows of every batch and merge before each round closes."""
    batches, w = make_batches(count=6), weight()
    params = {"iterations": 3, "calibration": "scale_by_magnitude"}
    whole = feed(build("iterative_channel", params=params, total_batches=6), batches, w)
    shard_a = build("iterative_channel", params=params, total_batches=6)
    shard_b = build("iterative_channel", params=params, total_batches=6)
    for index, batch in enumerate(batches):
        rows_a, rows_b = split_rows(batch)
        feed(shard_a, [rows_a], w)
        feed(shard_b, [rows_b], w)
        if index % 2 == 1:  # rounds are batches {0, 1}, {2, 3}, {4, 5}
            shard_a.merge(shard_b)
            shard_b.load_state_dict(shard_a.state_dict())
    assert torch.equal(shard_a.result()["score"], whole.result()["score"])
    assert torch.equal(shard_b.result()["score"], whole.result()["score"])


def test_iterative_channel_refuses_to_merge_states_at_different_points():
    batches, w = make_batches(), weight()
    ahead = feed(build("iterative_channel", params={"iterations": 2}), batches[:3], w)
    behind = feed(build("iterative_channel", params={"iterations": 2}), batches[:1], w)
    with pytest.raises(ValueError, match="shards of the same batches"):
        ahead.merge(behind)


ALL_METRICS = [*TOKEN_METRICS, "iterative_channel"]


@pytest.mark.parametrize("name", ALL_METRICS)
def test_state_dict_round_trip_through_safetensors_then_continue(name):
    batches, w = make_batches(), weight()
    params = {"iterations": 3} if name == "iterative_channel" else {}
    whole = feed(build(name, params=params), batches, w)
    restored = build(name, params=params)
    restored.load_state_dict(load(save(feed(build(name, params=params), batches[:3],
                                            w).state_dict())))
    feed(restored, batches[3:], w)
    for field, value in whole.result().items():
        assert torch.equal(restored.result()[field], value), field
    assert restored.progress() == whole.progress()


@pytest.mark.parametrize("name", ALL_METRICS)
def test_needs_say_which_module_tensors_a_metric_reads(name):
    metric = build(name, params={"iterations": 1} if name == "iterative_channel" else {})
    assert metric.needs <= {"input", "output"} and metric.needs
    x, mask = make_batches()[0]
    missing_input = None if "input" in metric.needs else x
    missing_output = None if "output" in metric.needs else output_of(metric, x, weight())
    with pytest.raises(ValueError, match="needs the module's"):
        metric.update(missing_input, missing_output, attention_mask=mask)


@pytest.mark.parametrize("name, options, message", [
    ("entropy", {}, "unknown importance metric 'entropy'"),
    ("l2_norm", {"params": {"iterations": 2}}, "l2_norm has no parameter 'iterations'"),
    ("kv_head_contribution", {"params": {"optimize_for": "speed"}}, "memory, latency"),
    ("iterative_channel", {"params": {"iterations": 0}}, "at least 1"),
    ("iterative_channel", {"params": {"calibration": "other"}}, "scale_by_magnitude"),
    ("channel_contribution", {"weight": None}, "2-D weight"),
    ("kv_head_contribution", {"n_kv_heads": 5}, "do not split"),
    ("kv_head_contribution", {"n_kv_heads": None}, "number of KV heads"),
])
def test_bad_metric_options_are_value_errors(name, options, message):
    arguments = {"weight": weight(), "params": {}, "n_kv_heads": N_KV, "head_dim": HEAD_DIM,
                 "total_batches": 5, **options}
    with pytest.raises(ValueError, match=message):
        create_metric(name, **arguments)


def test_every_metric_is_registered():
    assert sorted(METRICS) == sorted(ALL_METRICS) == sorted(vocabulary.METRICS)


def test_parameters_left_out_take_the_language_s_defaults():
    iterations = vocabulary.METRICS["iterative_channel"].params[0]
    assert iterations.name == "iterations"
    metric = build("iterative_channel", total_batches=iterations.default)
    assert (metric.iterations, metric.calibration) == (iterations.default, "none")
    assert build("kv_head_contribution").optimize_for == "memory"
    with pytest.raises(ValueError, match=f"needs at least {iterations.default} batches"):
        build("iterative_channel", total_batches=iterations.default - 1)


@pytest.mark.parametrize("name", TOKEN_METRICS)
def test_scores_before_any_batch_are_a_value_error(name):
    with pytest.raises(ValueError, match="seen no batch"):
        build(name).result()


def test_half_precision_inputs_are_scored_in_float32():
    x = torch.full((1, 300, D_IN), 1.0, dtype=torch.bfloat16)
    metric = create_metric("layernorm_contribution", weight=None)
    metric.update(None, x, attention_mask=torch.ones(1, 300))
    assert torch.equal(metric.result()["score"], torch.ones(D_IN))


@pytest.mark.parametrize("name", ALL_METRICS)
def test_state_keeps_no_autograd_graph(name):
    w = weight().requires_grad_()
    metric = build(name, w=w, params={"iterations": 1} if name == "iterative_channel" else {},
                   total_batches=1)
    x, mask = make_batches()[0]
    x = x.nan_to_num().requires_grad_()
    metric.update(x * 2, output_of(metric, x, w) * 2, attention_mask=mask)
    assert not any(t.requires_grad for t in metric.state_dict().values())
    assert not any(t.requires_grad for t in metric.result().values())


@pytest.mark.parametrize("name", ALL_METRICS)
def test_fed_under_inference_mode_then_merged_and_finished_outside(name):
    """The runtime feeds state under `torch.inference_mode()` and finishes it outside."""
    batches, w = make_batches(), weight()
    params = {"iterations": 2} if name == "iterative_channel" else {}
    expected = feed(build(name, params=params), batches, w).result()
    first, second = build(name, params=params), build(name, params=params)
    with torch.inference_mode():
        feed(first, batches, w)
        if name != "iterative_channel":
            feed(second, batches[:2], w)
    if name != "iterative_channel":
        second.merge(build(name, params=params))
        assert second.state_dict()["batches"] == 2
    restored = build(name, params=params)
    restored.load_state_dict(first.state_dict())
    for field, value in first.result().items():
        assert torch.equal(value, expected[field])
        assert torch.equal(restored.result()[field], expected[field])
