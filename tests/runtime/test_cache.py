"""`Results`: the dict-like results object, its memory report and how two runs combine.

The combination tests build each run's results from real aggregators over different
samples and compare `cat` with the aggregators run over all samples at once.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from expc.runtime.aggregate.create import create_aggregator
from expc.runtime.cache import Results


def keep_mine(mine: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    return mine


def add(mine: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    return mine + theirs


def padded(seed: int, lengths: list[int]):
    generator = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    hidden = torch.randn(len(lengths), seq, 4, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1] * n + [0] * (seq - n) for n in lengths])
    return hidden, mask


RUN_A = [padded(0, [3, 1]), padded(1, [2, 2, 1])]
RUN_B = [padded(2, [5, 4, 1])]
CAPTURES = {"capture/resid_out_{layer}": "mean", "capture/attn_out_{layer}": "full",
            "capture/head1/resid_mid_{layer}": "dataset_mean",
            "capture/resid_in_{layer}": "max"}


def results_of(batches, *, layer: int = 2) -> Results:
    aggregators = {key.format(layer=layer): create_aggregator(mode=mode)
                   for key, mode in CAPTURES.items()}
    for hidden, mask in batches:
        for aggregator in aggregators.values():
            aggregator.add(hidden, attention_mask=mask)
    results = Results({key + suffix: value for key, aggregator in aggregators.items()
                       for suffix, value in aggregator.result().items()},
                      metadata={"model": "tiny"})
    samples = sum(mask.shape[0] for _, mask in batches)
    results["meta/token_count"] = torch.cat([mask.sum(1) for _, mask in batches])
    results["meta/sample_index"] = torch.arange(samples)
    return results


def test_dict_like_access_and_metadata():
    results = Results({"capture/a_0": torch.zeros(2, 3)}, metadata={"model": "tiny"})
    results["capture/a_1"] = torch.ones(2, 3)
    assert list(results) == ["capture/a_0", "capture/a_1"] and len(results) == 2
    assert "capture/a_1" in results and torch.equal(results["capture/a_1"], torch.ones(2, 3))
    del results["capture/a_0"]
    assert list(results) == ["capture/a_1"]
    results.add_metadata(positions="last")
    assert results.metadata == {"model": "tiny", "positions": "last"}
    with pytest.raises(TypeError, match="must be a tensor"):
        results["capture/a_2"] = [1, 2]


def test_memory_size_and_tree_count_bytes_per_key_and_family():
    results = Results({"capture/resid_out_0": torch.zeros(4, 8),  # 128 bytes
                       "capture/resid_out_1": torch.zeros(4, 8),
                       "capture/head1/resid_out_2": torch.zeros(4, 8, dtype=torch.float64),
                       "meta/token_count": torch.zeros(4, dtype=torch.int64)})
    assert results.memory_size() == 128 + 128 + 256 + 32
    assert results.memory_tree(grouped=True) == {"capture/head{h}/resid_out_{L}": 256,
                                                 "capture/resid_out_{L}": 256,
                                                 "meta/token_count": 32}
    assert results.memory_tree(grouped=False)["capture/resid_out_1"] == 128


def test_map_to_dict_to_device_and_pickle_round_trip():
    results = results_of(RUN_A)
    results.register_aggregation("meta/", add)
    shapes = results.map_to_dict(lambda t: tuple(t.shape))
    assert shapes["capture/resid_out_2"] == (5, 4)
    moved = results.to("cpu")
    assert moved is not results and moved.equals(results) and moved.metadata == results.metadata
    restored = pickle.loads(pickle.dumps(results))
    assert restored.equals(results) and restored.metadata == {"model": "tiny"}
    combined = restored.cat(results)  # the registered strategy survived pickling
    assert torch.equal(combined["meta/token_count"], 2 * results["meta/token_count"])


def test_cat_equals_one_run_over_all_samples():
    combined = results_of(RUN_A).cat(results_of(RUN_B))
    whole = results_of(RUN_A + RUN_B)
    assert set(combined) == set(whole)
    for key in whole:
        assert combined[key].dtype == whole[key].dtype, key
        torch.testing.assert_close(combined[key], whole[key], rtol=1e-6, atol=1e-6)


def test_cat_of_many_parts_at_once_equals_one_run():
    parts = [results_of([batch]) for batch in RUN_A + RUN_B]
    combined = parts[0].cat(*parts[1:])
    whole = results_of(RUN_A + RUN_B)
    for key in whole:
        torch.testing.assert_close(combined[key], whole[key], rtol=1e-6, atol=1e-6)


def test_cat_refuses_mismatched_keys_shapes_and_importance():
    with pytest.raises(ValueError, match="different keys"):
        results_of(RUN_A).cat(results_of(RUN_B, layer=3))
    wide = Results({"capture/resid_out_2": torch.zeros(2, 5)})
    narrow = Results({"capture/resid_out_2": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="differ beyond the sample axis"):
        wide.cat(narrow)
    full_a = Results({"capture/a_1": torch.zeros(2, 3, 4), "capture/a_1.mask": torch.ones(2, 3)})
    full_b = Results({"capture/a_1": torch.zeros(2, 3, 5), "capture/a_1.mask": torch.ones(2, 3)})
    with pytest.raises(ValueError, match="beyond sequence length"):
        full_a.cat(full_b)
    scores = Results({"importance/l2_norm/layers.0.mlp.down_proj/score": torch.ones(4)})
    with pytest.raises(ValueError, match="merge the metric states"):
        scores.cat(scores)


def test_registered_strategy_wins_by_longest_prefix():
    first = Results({"importance/l2_norm/layers.0.mlp.down_proj/score": torch.ones(4),
                     "importance/l2_norm/layers.1.mlp.down_proj/score": torch.ones(4)})
    first.register_aggregation("importance/", add)
    first.register_aggregation("importance/l2_norm/layers.1", keep_mine)
    second = Results({key: torch.full((4,), 2.0) for key in first})
    combined = first.cat(second)
    assert torch.equal(combined["importance/l2_norm/layers.0.mlp.down_proj/score"],
                       torch.full((4,), 3.0))
    assert torch.equal(combined["importance/l2_norm/layers.1.mlp.down_proj/score"],
                       torch.ones(4))


def test_registered_strategy_overrides_one_key_of_a_dataset_mean_group():
    first = results_of(RUN_A)
    first.register_aggregation("capture/head1/resid_mid_2.count", keep_mine)
    combined = first.cat(results_of(RUN_B))
    assert torch.equal(combined["capture/head1/resid_mid_2.count"],
                       first["capture/head1/resid_mid_2.count"])
    torch.testing.assert_close(combined["capture/head1/resid_mid_2"],
                               results_of(RUN_A + RUN_B)["capture/head1/resid_mid_2"])
