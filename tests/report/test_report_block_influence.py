"""`block_influence` in the Importance section: one score per whole layer, drawn as one line
over the layers per model (the trunk's layers, then each head's), its pruning candidates the
lowest-scored layers of each model."""

from __future__ import annotations

import torch

from expc.report.build import build_report
from expc.report.importance_stats import layer_series, pruning_candidates, scored_modules
from expc.report.run_folder import open_run_folder

# trunk layers 0-1, heads 0-2 with layers 2-3 (write_run's default split)
SCORES = {"layers.0": 0.30, "layers.1": 0.05, **{f"head{h}/layers.{L}": 0.1 * (h + 1) + 0.01 * L
                                                 for h in range(3) for L in (2, 3)}}


def _add_scores(tensors: dict) -> None:
    for where, value in SCORES.items():
        tensors[f"importance/block_influence/{where}/score"] = torch.tensor(value)


def test_layers_form_one_series_per_head_in_layer_order(write_run, tmp_path):
    folder = open_run_folder(write_run(tmp_path / "run", edit=_add_scores))
    series = layer_series(scored_modules(folder)["block_influence"])
    assert list(series) == [0, 1, 2]
    for head, scored in series.items():
        assert [s.layer for s in scored] == [0, 1, 2, 3]
        assert [float(s.score) for s in scored] == [
            float(torch.tensor(SCORES[w])) for w in ("layers.0", "layers.1",
                                                     f"head{head}/layers.2", f"head{head}/layers.3")]


def test_candidates_are_each_model_s_lowest_layers(write_run, tmp_path):
    folder = open_run_folder(write_run(tmp_path / "run", edit=_add_scores))
    rows = [r for r in pruning_candidates(scored_modules(folder))
            if r["metric"] == "block_influence"]
    assert [(r["module"], r["head"], r["unit"]) for r in rows] == [
        (f"head{h}/layers", h, "layer") for h in range(3)]
    assert [c["index"] for c in rows[0]["lowest"]] == [1, 2, 3, 0]  # 0.05, 0.12, 0.13, 0.30
    assert [c["index"] for c in rows[2]["lowest"]] == [1, 0, 2, 3]  # 0.05, 0.30, 0.32, 0.33


def test_without_heads_one_line_and_the_section_draws_it(write_run, tmp_path):
    def trunk_only(tensors: dict) -> None:
        for layer, value in enumerate((0.2, 0.1, 0.4, 0.3)):
            tensors[f"importance/block_influence/layers.{layer}/score"] = torch.tensor(value)

    run = write_run(tmp_path / "run", edit=trunk_only)
    folder = open_run_folder(run)
    series = layer_series(scored_modules(folder)["block_influence"])
    assert list(series) == [None] and [s.layer for s in series[None]] == [0, 1, 2, 3]
    page, _, sections = build_report(run)
    assert "Importance" in sections
    assert "block_influence per layer" in page
    assert "1 - mean cosine between each layer" in page
