"""`expc diff` compares ranking keys as rankings (top-k overlap, Spearman with ties at their
mean rank, checked against the formula in float64), flags runs that are not complete, and
fits a 100-column terminal."""

from __future__ import annotations

import math
import random

import pytest
import torch

from expc.cli import main
from expc.report.diff import diff_runs
from expc.report.diff_text import PATH_WIDTH, WIDTH, render_text, shorten_middle
from expc.report.rank_compare import average_ranks, compare_rankings, spearman, top_k
from expc.spec.rankings import ORDER, SCORE, ranking_kind
from expc.spec.run_format import parse_key
from expc.spec.vocabulary import METRICS

SCORE_KEY = "importance/channel_contribution/layers.1.mlp.down_proj/score"
ORDER_KEY = "importance/iterative_channel/head0/layers.3.mlp.down_proj/channels_importance_ascending"


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    return exited.value.code, capsys.readouterr().out


def formula_spearman(a: list[float], b: list[float]) -> float:
    """1 - 6 sum(d^2) / (n (n^2 - 1)), in float64, for values without ties."""
    n = len(a)
    rank_a = {i: r + 1 for r, i in enumerate(sorted(range(n), key=a.__getitem__))}
    rank_b = {i: r + 1 for r, i in enumerate(sorted(range(n), key=b.__getitem__))}
    d2 = sum((rank_a[i] - rank_b[i]) ** 2 for i in range(n))
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_ranking_keys_come_from_the_key_parser():
    assert ranking_kind(parse_key(SCORE_KEY)) == SCORE
    assert ranking_kind(parse_key(ORDER_KEY)) == ORDER
    for key in ("importance/channel_contribution/layers.1.mlp.down_proj/weight_norm",
                "capture/resid_out_1", "effect/kl/head1", "meta/token_count"):
        assert ranking_kind(parse_key(key)) is None
    # every metric's score is a ranking: its meaning says which way it points
    assert all("higher = more important" in m.field_meaning("score") for m in METRICS.values())


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_the_formula_without_ties(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 300)
    a = [rng.random() for _ in range(n)]
    b = [x + rng.gauss(0, 0.3) for x in a]
    got = spearman(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert got == pytest.approx(formula_spearman(a, b), abs=1e-12)


def test_ties_share_their_mean_rank():
    ranks = average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0]))
    assert ranks.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]  # ranks 3, 4, 5 share 4
    a = torch.tensor([1.0, 2.0, 2.0, 3.0])
    b = torch.tensor([1.0, 3.0, 2.0, 4.0])
    ra, rb = [1, 2.5, 2.5, 4], [1, 3, 2, 4]  # Pearson of the fractional ranks, by hand
    ma, mb = sum(ra) / 4, sum(rb) / 4
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    expected = cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert spearman(torch.ones(5), torch.arange(5.0)) is None  # all tied: undefined


def test_top_k_overlap_and_order_keys():
    assert [top_k(n) for n in (1, 9, 10, 11, 64)] == [1, 1, 1, 2, 7]
    a = torch.arange(20.0)  # units 18, 19 are the top 2
    b = a.clone()
    b[18], b[0] = -1.0, 100.0  # B's top 2: units 0 and 19
    result = compare_rankings(a, b, SCORE)
    assert (result.units, result.k, result.top_k_overlap) == (20, 2, 0.5)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    same = compare_rankings(order, order.clone(), ORDER)
    assert (same.top_k_overlap, same.spearman) == (1.0, pytest.approx(1.0))
    assert compare_rankings(order.flip(0), order, ORDER).spearman == pytest.approx(-1.0)
    assert compare_rankings(torch.zeros(30, dtype=torch.int64), order, ORDER) is None


def test_reordered_scores_are_shown_as_rankings(write_run, tmp_path, capsys):
    def scale(tensors):  # same order, larger values: a ranking that did not change
        tensors[SCORE_KEY] = tensors[SCORE_KEY] * 3.0

    def swap(tensors):  # the most important unit becomes the least
        score = tensors["importance/l2_norm/layers.0.mlp.down_proj/score"]
        top = int(score.argmax())
        score[top] = score.min() - 1.0

    base = write_run(tmp_path / "a")
    result = diff_runs(str(base), str(write_run(tmp_path / "b", edit=lambda t: (scale(t),
                                                                                 swap(t)))))
    by_key = {k.key: k for k in result.keys}
    scaled = by_key[SCORE_KEY]
    assert scaled.status == "differs"  # the values decide the status, as for every key
    assert (scaled.ranking.top_k_overlap, scaled.ranking.spearman) == (1.0, pytest.approx(1.0))
    swapped = by_key["importance/l2_norm/layers.0.mlp.down_proj/score"].ranking
    assert swapped.k == 7 and swapped.top_k_overlap == pytest.approx(6 / 7)
    assert swapped.spearman < 1.0
    assert by_key["importance/channel_contribution/layers.1.mlp.down_proj/weight_norm"
                  ].ranking is None
    text = render_text(result)
    assert "top-k overlap" in text and "6/7 (86%)" in text and "7/7 (100%)" in text
    ranking_table = text[text.index("ranking key"):]
    assert "max abs" not in ranking_table


@pytest.mark.parametrize("status", ["failed", "running"])
def test_a_run_that_is_not_complete_is_flagged_and_never_the_same(write_run, tmp_path, capsys,
                                                                   status):
    base = write_run(tmp_path / "a")
    other = write_run(tmp_path / "b", status=status)
    result = diff_runs(str(base), str(other))
    assert not result.same and result.incomplete == (("b", str(other), status),)
    code, out = run_cli(["diff", str(base), str(other)], capsys)
    assert code == 1
    shown = shorten_middle(str(other), PATH_WIDTH)  # a long path keeps both ends
    assert out.startswith("warning: run B")
    assert f"warning: run B ({shown}) is `{status}`, not complete" in " ".join(out.split())
    if status == "failed":  # the same keys as a complete run: only the status differs
        assert out.strip().endswith(f"runs differ: run B is `{status}`")
    code, out = run_cli(["diff", str(other), str(other)], capsys)
    assert code == 1 and "warning: run A" in out and "warning: run B" in out


def test_every_line_fits_100_columns(write_run, tmp_path, capsys):
    long_name = "a_capture_name_that_is_far_too_long_for_any_terminal_" * 2
    long_key = f"capture/head2/{long_name}_3"
    score_key = ("importance/channel_contribution/head2/layers.3.mlp.experts.12.down_proj"
                 ".with_a_very_long_module_path/score")

    def longer(tensors, nudge):
        tensors[long_key] = torch.arange(4096.0).reshape(2, 8, 16, 16) + nudge
        tensors[score_key] = torch.arange(64.0).flip(0) if nudge else torch.arange(64.0)
        tensors["capture/resid_out_0"] = tensors["capture/resid_out_0"] + nudge

    folder = tmp_path / ("deep_" * 20) / "run_a"
    base = write_run(folder, edit=lambda t: longer(t, 0.0))
    other = write_run(tmp_path / "b", status="failed", edit=lambda t: longer(t, 1.0))
    code, out = run_cli(["diff", str(base), str(other)], capsys)
    assert code == 1
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, [l for l in lines if len(l) > WIDTH]
    table_line = next(line for line in lines if line.startswith("capture/head2/a_ca"))
    assert "..." in table_line and table_line.split()[0].endswith("terminal__3")
    assert any(line.split()[0].endswith("module_path/score") for line in lines)
    assert "runs differ; first divergence: layer 0 (capture/resid_out_0)" in out


def test_shorten_middle_keeps_both_ends():
    assert shorten_middle("short", 10) == "short"
    cut = shorten_middle("importance/metric/layers.12.mlp.down_proj/score", 24)
    assert len(cut) == 24 and cut.startswith("importance") and cut.endswith("/score")
