"""The numbers behind the plots, against the formulas written out here with plain torch:
key parsing and forward order, per-sample vectors of a masked `full` capture, mean norms,
consecutive-layer cosine, head disagreement, the masked mean attention pattern, and the
lowest scores (pruning candidates)."""

from __future__ import annotations

import math

import pytest
import torch

from expc.report.capture_stats import (consecutive_cosine, families, head_disagreement,
                                       mean_norm, sample_vectors)
from expc.report.importance_stats import lowest, scored_modules
from expc.report.keys import forward_position, place_label
from expc.report.run_folder import open_run_folder
from expc.report.section_attention import key_profile, mean_pattern
from expc.spec.run_format import parse_key


def test_forward_order_is_data_embed_trunk_heads_final_norm_logits():
    keys = ["capture/logits", "capture/head1/resid_out_2", "capture/head0/resid_out_3",
            "capture/resid_out_1", "capture/head0/final_norm", "capture/embed",
            "capture/head0/resid_out_2", "capture/resid_out_0", "meta/sample_index",
            "importance/l2_norm/layers.0.mlp.down_proj/score"]
    ordered = sorted(keys, key=lambda k: (forward_position(parse_key(k)), k))
    assert [place_label(parse_key(k)) for k in ordered] == [
        "data (meta)", "embed", "layer 0", "layer 0", "layer 1", "head0 layer 2",
        "head0 layer 3", "head1 layer 2", "head0 final_norm", "logits"]


def test_sample_vectors_of_a_full_capture_average_its_masked_tokens():
    value = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [N, S, H]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)  # [N, S]
    vectors = sample_vectors(value, mask)
    expected = torch.stack([(value[0, 0] + value[0, 1]) / 2, value[1, 0]]).double()
    assert torch.equal(vectors, expected)
    assert sample_vectors(torch.ones(4), None).shape == (1, 4)  # dataset_mean [H]


def test_family_statistics_match_the_formulas(write_run, tmp_path):
    folder = open_run_folder(write_run(tmp_path / "run"))
    found = {f.label: f for f in families(folder)}
    assert set(found) == {"resid_out (mean)", "resid_last (mean)", "attn_out (full)",
                          "mlp_out (dataset_mean)"}
    resid = found["resid_out (mean)"]
    raw = {k: folder.tensor(k).double() for k in folder.keys
           if parse_key(k).name == "resid_out" and parse_key(k).kind == "capture"}
    a, b = raw["capture/resid_out_1"], raw["capture/head2/resid_out_2"]
    assert math.isclose(mean_norm(resid.trunk[1]),
                        sum(float(row.pow(2).sum().sqrt()) for row in a) / len(a))
    cos = [float((x @ y) / (x.norm() * y.norm())) for x, y in zip(a, b)]
    assert dict(consecutive_cosine(resid.paths()[2]))[2] == pytest.approx(sum(cos) / len(cos))
    stack = torch.stack([raw[f"capture/head{h}/resid_out_3"] for h in range(3)])  # [3, N, H]
    mean = stack.mean(dim=0)
    variance = ((stack - mean) ** 2).mean(dim=0).mean()
    assert dict(head_disagreement(resid))[3] == pytest.approx(float(variance))
    assert [layer for layer, _ in head_disagreement(resid)] == [2, 3]


def test_full_captures_are_read_a_slice_at_a_time(write_run, tmp_path, monkeypatch):
    from expc.report import run_folder

    folder = open_run_folder(write_run(tmp_path / "run"))
    value = folder.tensor("capture/attn_out_1").double()  # [N, S, H]
    mask = folder.tensor("capture/attn_out_1.mask").double()  # [N, S]
    expected = (value * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)  # [N, H]
    pattern_key = "capture/attn_pattern_1"
    whole = mean_pattern([(folder.tensor(pattern_key), folder.tensor(pattern_key + ".mask"))])
    monkeypatch.setattr(run_folder, "CHUNK_ELEMENTS", 1)  # one sample per slice
    assert folder.rows_per_chunk("capture/attn_out_1") == 1
    attn_out = next(f for f in families(folder) if f.name == "attn_out")
    assert torch.allclose(attn_out.trunk[1], expected)
    rows = folder.rows_per_chunk(pattern_key)
    sliced = mean_pattern(zip(folder.chunks(pattern_key, rows),
                              folder.chunks(pattern_key + ".mask", rows)))
    assert torch.allclose(sliced, whole)


def test_mean_pattern_averages_only_real_token_pairs():
    pattern = torch.rand(2, 2, 3, 3)  # [N, A, S_q, S_k], as the run folder stores it
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    mean = mean_pattern([(pattern, mask)])  # [A, S_q, S_k]
    assert mean.shape == (2, 3, 3)
    both = (pattern[0, 1, 1, 0] + pattern[1, 1, 1, 0]).double() / 2  # head 1, query 1, key 0
    assert torch.isclose(mean[1, 1, 0], both)
    assert torch.isclose(mean[0, 2, 1], pattern[0, 0, 2, 1].double())  # sample 1 has no token 2
    short = mean_pattern([(pattern, torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool))])
    assert short.shape == (2, 2, 2)  # cropped to the longest sample
    sliced = mean_pattern([(pattern[:1], mask[:1]), (pattern[1:], mask[1:])])
    assert torch.allclose(sliced, mean)  # read a slice of samples at a time: same mean


def test_key_profile_is_the_mean_over_samples():
    received = torch.rand(4, 2, 5)  # [N, A, S_k]
    assert torch.allclose(key_profile(received), received.double().sum(dim=0) / 4)
    assert torch.equal(key_profile(received[0]), received[0].double())  # dataset_mean [A, S_k]


def test_lowest_skips_non_finite_scores_and_is_sorted():
    score = torch.tensor([3.0, float("inf"), 1.0, float("nan"), 2.0])
    assert lowest(score, k=3) == [(2, 1.0), (4, 2.0), (0, 3.0)]


def test_scored_modules_group_fields_in_forward_order(write_run, tmp_path):
    folder = open_run_folder(write_run(tmp_path / "run"))
    by_metric = scored_modules(folder)
    contribution = by_metric["channel_contribution"]
    assert [s.instance for s in contribution][:3] == [
        "layers.0.mlp.down_proj", "layers.1.mlp.down_proj", "head0/layers.2.mlp.down_proj"]
    assert set(contribution[0].fields) == {"score", "weight_norm", "activation_mean_abs"}
    assert [s.short_label for s in by_metric["iterative_channel"]] == ["L3 h0", "L3 h1", "L3 h2"]
