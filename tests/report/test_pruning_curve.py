"""The "what pruning costs" curve on hand-written run folders: each head's fraction and
metric read from the manifest's IR interventions, the points' means and intervals written
out in float64, and the curve drawn in the Importance section only when a series holds two
fractions."""

from __future__ import annotations

import math

from safetensors.torch import load_file

from expc.report.build import build_report
from expc.report.effect_stats import effect_groups
from expc.report.pruning_curve import Selection, curves, head_selections
from expc.report.run_folder import open_run_folder


def _chosen(ir_nodes, kind, heads, fraction, *, metric=None, seed=0, target="mlp.down_proj"):
    node = ir_nodes.intervene(target, "*", heads, target_kind="linear", channels=[0])
    node["channels"].update(kind=kind, indices=[], metric=metric, fraction=fraction, seed=seed,
                            run=None if kind == "random" else "runs/scores")
    return node


def _sweep(ir_nodes):
    """Heads 1-2 lowest l2_norm at 10% and 50%, 3-4 random at 50% (two seeds), 5 highest at
    10%, 6 a list; head 0 untouched."""
    return [_chosen(ir_nodes, "lowest", [1], 0.1, metric="l2_norm"),
            _chosen(ir_nodes, "lowest", [2], 0.5, metric="l2_norm"),
            _chosen(ir_nodes, "random", [3], 0.5, seed=0),
            _chosen(ir_nodes, "random", [4], 0.5, seed=1),
            _chosen(ir_nodes, "highest", [5], 0.1, metric="l2_norm"),
            ir_nodes.intervene("mlp.down_proj", "*", [6], target_kind="linear", channels=[1])]


def _run(tmp_path, write_run, ir_nodes, nodes):
    effects = [ir_nodes.effect("loss", "*"), ir_nodes.effect("cosine", "1:", reference=0)]
    return write_run(tmp_path / "run", heads=7, interventions=nodes, effects=effects)


def _mean_ci(values):
    x = [float(v) for v in values]
    n = len(x)
    mean = sum(x) / n
    half = 1.96 * math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def test_heads_fraction_and_metric_come_from_the_ir(tmp_path, write_run, ir_nodes):
    folder = open_run_folder(_run(tmp_path, write_run, ir_nodes, _sweep(ir_nodes)))
    selections = head_selections(folder.manifest)
    lowest = Selection(kind="lowest", metric="l2_norm", target="mlp.down_proj", fraction=0.1)
    assert selections[0] is None and selections[1] == lowest
    assert selections[3] == Selection(kind="random", metric=None, target="mlp.down_proj",
                                      fraction=0.5)
    assert 6 not in selections  # a list has no fraction: not on the curve


def test_points_are_means_with_intervals_random_seeds_averaged(tmp_path, write_run, ir_nodes):
    run = _run(tmp_path, write_run, ir_nodes, _sweep(ir_nodes))
    folder = open_run_folder(run)
    tensors = load_file(str(run / "results.safetensors"))
    found = curves(effect_groups(folder), head_selections(folder.manifest))
    loss = found["loss"]
    lowest = loss[("mlp.down_proj", "lowest l2_norm")]
    assert [(p.fraction, p.heads) for p in lowest] == [(0.0, (0,)), (0.1, (1,)), (0.5, (2,))]
    for point, head in zip(lowest, (0, 1, 2)):
        mean, low, high = _mean_ci(tensors[f"effect/loss/head{head}"].double())
        assert math.isclose(point.summary.mean, mean, rel_tol=1e-12)
        assert math.isclose(point.summary.low, low, rel_tol=1e-12)
        assert math.isclose(point.summary.high, high, rel_tol=1e-12)
    random = loss[("mlp.down_proj", "random")]
    assert [(p.fraction, p.heads) for p in random] == [(0.0, (0,)), (0.5, (3, 4))]
    per_sample = [(float(a) + float(b)) / 2 for a, b in
                  zip(tensors["effect/loss/head3"].double(), tensors["effect/loss/head4"].double())]
    assert math.isclose(random[1].summary.mean, _mean_ci(per_sample)[0], rel_tol=1e-12)
    assert math.isclose(random[1].summary.low, _mean_ci(per_sample)[1], rel_tol=1e-12)
    # an effect `vs heads[0]` has no value at head 0: the curve starts at the first fraction
    assert [p.fraction for p in found["cosine"][("mlp.down_proj", "lowest l2_norm")]] == [0.1, 0.5]


def test_the_curve_sits_in_the_importance_section(tmp_path, write_run, ir_nodes, page_parser):
    with_curve = _run(tmp_path, write_run, ir_nodes, _sweep(ir_nodes))
    html, _, titles = build_report(with_curve)
    page = page_parser(html)
    assert "Importance" in titles and "What pruning costs" in html
    plain = write_run(tmp_path / "plain", heads=7)
    plain_page = page_parser(build_report(plain)[0])
    assert page.sections["importance"] == plain_page.sections["importance"] + 1
    assert "lowest l2_norm" in " ".join(page.text)


def test_one_fraction_draws_no_curve(tmp_path, write_run, ir_nodes):
    nodes = [_chosen(ir_nodes, "lowest", [1], 0.25, metric="l2_norm"),
             _chosen(ir_nodes, "random", [2], 0.25),
             _chosen(ir_nodes, "highest", [3], 0.25, metric="l2_norm")]
    run = _run(tmp_path, write_run, ir_nodes, nodes)
    folder = open_run_folder(run)
    assert curves(effect_groups(folder), head_selections(folder.manifest)) == {}
    assert "What pruning costs" not in build_report(run)[0]


def test_a_head_choosing_two_ways_is_left_out(tmp_path, write_run, ir_nodes):
    nodes = [*_sweep(ir_nodes)[:2],
             _chosen(ir_nodes, "lowest", [2], 0.5, metric="kv_head_contribution",
                     target="self_attn.o_proj")]
    folder = open_run_folder(_run(tmp_path, write_run, ir_nodes, nodes))
    assert 2 not in head_selections(folder.manifest)
