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
from expc.report.section_attention import MAX_SAMPLES, _place_maps
from expc.report.tokens import TokenText
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
    no_text = TokenText(samples={}, pieces={})
    whole = _place_maps(folder, pattern_key, no_text)
    monkeypatch.setattr(run_folder, "CHUNK_ELEMENTS", 1)  # one sample per slice
    assert folder.rows_per_chunk("capture/attn_out_1") == 1
    attn_out = next(f for f in families(folder) if f.name == "attn_out")
    assert torch.allclose(attn_out.trunk[1], expected)
    sliced = _place_maps(folder, pattern_key, no_text)
    assert [m.tokens for m in sliced.maps] == [m.tokens for m in whole.maps]
    assert all(torch.equal(a.weights, b.weights) for a, b in zip(sliced.maps, whole.maps))


def test_attention_maps_are_one_per_sample_cropped_to_its_real_tokens(write_run, tmp_path):
    folder = open_run_folder(write_run(tmp_path / "run"))
    key = "capture/attn_pattern_1"
    pattern, mask = folder.tensor(key).double(), folder.tensor(key + ".mask")  # [N,A,S,S], [N,S]
    place = _place_maps(folder, key, TokenText(samples={}, pieces={}))
    assert place.full and len(place.maps) == min(MAX_SAMPLES, pattern.shape[0])
    for i, drawn in enumerate(place.maps):
        length = int(mask[i].sum())
        assert drawn.tokens == [str(p) for p in range(length)]  # positions: no token text
        assert torch.equal(drawn.weights, pattern[i, :, :length, :length])
    reduced = _place_maps(folder, "capture/attn_pattern_0", TokenText(samples={}, pieces={}))
    assert not reduced.full and reduced.maps[0].weights.dim() == 2  # [A, S_k]


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
