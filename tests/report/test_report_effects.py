"""The Effects section, summary.md and the statistics behind them, on synthetic run folders
that hold `effect/...` and `intervention/...` keys as docs/run-folder.md describes them: a
Hydra run with 3 heads (kl vs head 0, loss of every head), a layer sweep (4 heads each
ablating a different layer beside an untouched head 0), runs without effects, and a doctored
folder with NaN and inf effect values. Every mean and interval is checked against the
formula written out here in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from expc.report.build import build_report
from expc.report.effect_stats import effect_groups, interval
from expc.report.html_parts import fmt_interval, fmt_number
from expc.report.intervention_layout import (InterventionNode, intervention_nodes, layer_sweep,
                                             selector_indices)
from expc.report.intervention_words import statement
from expc.report.run_folder import open_run_folder
from expc.spec.ir import IndexSelector, Slice

NAN, INF = float("nan"), float("inf")


def formula(values: list[float]) -> tuple[float, float, float]:
    """mean, mean - 1.96 s / sqrt(n), mean + 1.96 s / sqrt(n), s the sample std."""
    n = len(values)
    mean = math.fsum(values) / n
    s = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, mean - 1.96 * s / math.sqrt(n), mean + 1.96 * s / math.sqrt(n)


def section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start:html.index("</section>", start)]


@pytest.fixture(scope="module")
def hydra(write_run, ir_nodes, tmp_path_factory):
    """3 heads after a trunk of 2: head 1 zeroes mlp_out at layer 2, head 2 three channels
    of mlp.down_proj's input at layer 3; kl of heads 1, 2 vs head 0, loss of every head."""
    run = write_run(
        tmp_path_factory.mktemp("hydra") / "run", heads=3, trunk=2, samples=12,
        interventions=[ir_nodes.intervene("mlp_out", [2], [1]),
                       ir_nodes.intervene("mlp.down_proj", [3], [2], target_kind="linear",
                                          channels=[5, 1, 9, 30, 2, 7, 11, 3, 4, 8, 6, 0])],
        effects=[ir_nodes.effect("kl", "1:", reference=0), ir_nodes.effect("loss", "*")])
    html, summary, titles = build_report(run)
    return run, html, summary, titles


@pytest.fixture(scope="module")
def sweep(write_run, ir_nodes, tmp_path_factory):
    """5 heads over 4 layers, trunk 0: head h > 0 zeroes mlp_out at layer h - 1."""
    run = write_run(
        tmp_path_factory.mktemp("sweep") / "run", n_layers=4, heads=5, trunk=0, samples=9,
        interventions=[ir_nodes.intervene("mlp_out", [h - 1], [h]) for h in range(1, 5)],
        effects=[ir_nodes.effect("kl", "1:", reference=0), ir_nodes.effect("loss", "*")])
    html, summary, titles = build_report(run)
    return run, html, summary, titles


def test_hydra_run_has_an_effects_section_with_its_distributions(hydra, page_parser):
    _, html, _, titles = hydra
    assert titles[:2] == ("Run", "Effects")
    page = page_parser(html)
    assert page.sections["effects"] == 1  # the distributions (no sweep: no line)
    body = section(html, "effects")
    assert "Layer sweep" not in body
    for head in (1, 2):
        assert f"<td>kl</td><td>head {head}</td><td>head 0</td>" in body
    for head in (0, 1, 2):
        assert f"<td>loss</td><td>head {head}</td><td>-</td>" in body


def test_table_and_summary_hold_the_formula_s_mean_and_interval(hydra):
    run, html, summary, _ = hydra
    folder = open_run_folder(run)
    body = section(html, "effects")
    for key in ("effect/kl/head1", "effect/kl/head2", "effect/loss/head0", "effect/loss/head2"):
        values = [float(v) for v in folder.tensor(key)]
        mean, low, high = formula(values)
        cells = f"<td>{fmt_number(mean)}</td><td>{fmt_interval(low, high)}</td>"
        assert cells in body, key
        name, head = key.split("/")[1], key.split("/")[2][len("head"):]
        vs = "head 0" if name == "kl" else "-"
        assert (f"| {name} | head {head} | {vs} | {len(values)} | {fmt_number(mean)} "
                f"| {fmt_interval(low, high)} |") in summary


def test_statistics_equal_the_float64_formula_and_the_manifest(hydra):
    run = hydra[0]
    folder = open_run_folder(run)
    groups = effect_groups(folder)
    assert list(groups) == ["kl", "loss"]
    assert [e.head for e in groups["kl"]] == [1, 2]
    assert [e.head for e in groups["loss"]] == [0, 1, 2]
    for effect in (e for heads in groups.values() for e in heads):
        mean, low, high = formula([float(v) for v in folder.tensor(effect.key)])
        assert effect.summary.mean == pytest.approx(mean, rel=1e-12, abs=1e-15)
        assert effect.summary.low == pytest.approx(low, rel=1e-12, abs=1e-15)
        assert effect.summary.high == pytest.approx(high, rel=1e-12, abs=1e-15)
        entry = folder.entry(effect.key)
        assert effect.summary.mean == pytest.approx(entry["mean"], rel=1e-12)
        assert [effect.summary.low, effect.summary.high] == pytest.approx(entry["ci95"],
                                                                           rel=1e-12)
        assert effect.reference == entry["reference"] and effect.meaning == entry["meaning"]


def test_interval_is_undefined_below_two_values_and_skips_non_finite_ones():
    assert interval(torch.tensor([])).mean is None
    one = interval(torch.tensor([0.25]))
    assert (one.n, one.mean, one.low, one.high) == (1, 0.25, None, None)
    mixed = interval(torch.tensor([1.0, NAN, 2.0, INF, 4.0, -INF]))
    mean, low, high = formula([1.0, 2.0, 4.0])
    assert (mixed.n, mixed.mean) == (3, pytest.approx(mean))
    assert (mixed.low, mixed.high) == (pytest.approx(low), pytest.approx(high))


def test_interventions_are_listed_in_words_with_their_units(hydra):
    _, html, _, _ = hydra
    body = section(html, "effects")
    assert "<code>intervene mlp_out[2] of heads[1] { set = zero }</code>" in body
    assert ("<code>intervene mlp.down_proj[3] of heads[2] { set = zero, channels = "
            "[5, 1, 9, 30, 2, 7, 11, 3, 4, 8, 6, 0] }</code>") in body
    assert ("<td>2</td><td>3</td><td>zero of mlp.down_proj at layer 3, head 2</td>"
            "<td>channels</td><td>12</td><td>5, 1, 9, 30, 2, 7, 11, 3, 4, 8, … (12 in all)</td>"
            ) in body
    assert "<td>1</td><td>2</td><td>zero of mlp_out at layer 2, head 1</td>" in body
    assert "no statement of the IR names" not in body


def test_layer_sweep_draws_a_line_over_layers(sweep, page_parser):
    run, html, _, _ = sweep
    folder = open_run_folder(run)
    assert layer_sweep(intervention_nodes(folder.manifest)) == {1: 0, 2: 1, 3: 2, 4: 3}
    assert page_parser(html).sections["effects"] == 2  # distributions + the sweep line
    body = section(html, "effects")
    assert "Layer sweep" in body and "intervened layer" in body
    assert "head 0, no intervention" in body  # loss of the untouched head as a level
    for head in range(1, 5):
        assert f"<td>kl</td><td>head {head}</td><td>head 0</td><td>{head - 1}</td>" in body


def _node(index, heads, layers, operation="zero"):
    return InterventionNode(index=index, node={"target": "mlp_out", "operation": operation},
                            heads=heads, layers=layers)


@pytest.mark.parametrize("nodes", [
    [_node(0, (1,), (0,))],  # one head
    [_node(0, (1,), (0,)), _node(1, (2,), (0,))],  # the same layer twice
    [_node(0, (1,), (0, 1)), _node(1, (2,), (2,))],  # a head changes two layers
    [_node(0, (1,), (0,)), _node(1, (2,), (1,), operation="mean")],  # differ beyond layers
    [_node(0, (None,), (0,)), _node(1, (None,), (1,))],  # no split
], ids=["one-head", "same-layer", "two-layers", "other-operation", "no-split"])
def test_what_is_not_a_layer_sweep(nodes):
    assert layer_sweep(nodes) == {}


def test_sweep_may_be_written_as_one_statement_per_head():
    assert layer_sweep([_node(0, (2,), (3,)), _node(1, (1,), (1,))]) == {1: 1, 2: 3}


@pytest.mark.parametrize(("text", "selector"), [
    ("*", IndexSelector(all=True)), ("1:", IndexSelector(items=(Slice(start=1),))),
    (":2", IndexSelector(items=(Slice(stop=2),))), ("1, 3", IndexSelector(items=(1, 3))),
    ("-1", IndexSelector(items=(-1,))),
    ("0:2, 4", IndexSelector(items=(Slice(start=0, stop=2), 4))),
    ("[2]", IndexSelector(items=(2,)))])
def test_selector_text_resolves_like_the_language(text, selector):
    assert selector_indices(text, 5) == selector.resolve(5)


@pytest.mark.parametrize("text", [None, "", "x", "7", "1:x", 3])
def test_selector_text_that_is_not_one_selects_nothing(text):
    assert selector_indices(text, 5) == ()


def test_statements_are_written_back_in_the_language():
    node = {"target": "resid_out", "layers": "2", "heads": "1",
            "operation": {"kind": "add", "run": "runs/steer", "key": "capture/diff_2",
                          "scale": 4.0},
            "channels": {"kind": "lowest", "run": "runs/s", "metric": "channel_contribution",
                         "fraction": 0.25, "count": None},
            "positions": {"kind": "field", "field": "m"}}
    assert statement(node) == (
        'intervene resid_out[2] of heads[1] { add = vector(run = "runs/steer", key = '
        '"capture/diff_2"), scale = 4, channels = lowest(run = "runs/s", metric = '
        'channel_contribution, fraction = 0.25), positions = field("m") }')
    assert statement({"target": "mlp_out", "layers": "*", "heads": None,
                      "operation": {"kind": "scale", "scale": 0.5},
                      "positions": {"kind": "last"}}) == (
        "intervene mlp_out[*] { scale = 0.5, positions = last }")


def test_run_without_effects_or_interventions_has_no_section(write_run, tmp_path, page_parser):
    html, summary, titles = build_report(write_run(tmp_path / "run"))
    assert "Effects" not in titles and "Interventions" not in titles
    assert "effects" not in page_parser(html).sections
    assert "## Effects" not in summary


def test_interventions_without_effects_are_still_shown(write_run, ir_nodes, tmp_path):
    run = write_run(tmp_path / "run", interventions=[ir_nodes.intervene("mlp_out", [3], [1])])
    html, summary, titles = build_report(run)
    assert "Interventions" in titles and "Effects" not in titles
    assert "<code>intervene mlp_out[3] of heads[1] { set = zero }</code>" in html
    assert "## Effects" not in summary


def test_stored_keys_without_an_ir_statement_are_still_listed(write_run, ir_nodes, tmp_path):
    def add_stray(tensors):
        tensors["intervention/head2/mlp_out_3/channels"] = torch.tensor([4, 2])

    run = write_run(tmp_path / "run", interventions=[ir_nodes.intervene("mlp_out", [3], [1])],
                    edit=add_stray)
    body = section(build_report(run)[0], "interventions")
    assert "no statement of the IR names" in body
    assert ("<td>2</td><td>3</td><td>added by a test</td><td>channels</td><td>2</td>"
            "<td>4, 2</td>") in body
    assert body.count("Interventions") == 1  # the section's own heading, no second one


def test_effects_without_a_split_are_keyed_by_name(write_run, ir_nodes, tmp_path):
    run = write_run(tmp_path / "run", trunk=4, heads=1, effects=[ir_nodes.effect("loss")])
    html, summary, _ = build_report(run)
    assert "<td>loss</td><td>model</td><td>-</td>" in section(html, "effects")
    assert "| loss | model | - |" in summary


def test_non_finite_effect_values_are_left_out_and_warned_about(write_run, ir_nodes, tmp_path):
    def doctor(tensors):
        tensors["effect/kl/head1"][0] = NAN
        tensors["effect/kl/head1"][3] = INF
        tensors["effect/kl/head2"][:] = NAN  # nothing finite: no mean, no box

    run = write_run(tmp_path / "run", heads=3, samples=8,
                    effects=[ir_nodes.effect("kl", "1:", reference=0)], edit=doctor)
    html, summary, _ = build_report(run)
    assert "2 result tensors hold NaN or inf values" in section(html, "run")
    body = section(html, "effects")
    assert ("Non-finite values left out of these numbers and figures:</strong> "
            "effect/kl/head1 (2), effect/kl/head2 (8).") in body
    values = open_run_folder(run).tensor("effect/kl/head1").double()
    mean, low, high = formula([float(v) for v in values if math.isfinite(v)])
    assert f"<td>6</td><td>{fmt_number(mean)}</td><td>{fmt_interval(low, high)}</td>" in body
    assert "<td>kl</td><td>head 2</td><td>head 0</td><td>-</td><td>0</td><td>-</td>" in body
    assert "| kl | head 2 | head 0 | 0 | - | - |" in summary
