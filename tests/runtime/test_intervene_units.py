"""Unit selection against hand-sorted scores: ties, fraction rounding, bounds, KV expansion."""

import attrs
import pytest
import torch
from intervene_runs import SPAN, entry, write_run

from expc.runtime.intervene.facts import ModelFacts
from expc.runtime.intervene.sources import RunSources
from expc.runtime.intervene.units import select_units
from expc.spec import ir
from expc.spec.diagnostics import DiagnosticError

ZERO = ir.Operation(kind="zero")
SCORES = [0.5, 0.1, 0.3, 0.1, 0.9, 0.3, 0.7, 0.5]  # ties at 0.1, 0.3, 0.5
KEY = "importance/channel_contribution/head1/layers.2.mlp.down_proj/score"


def facts(**widths) -> ModelFacts:
    return ModelFacts(n_heads=4, n_kv_heads=2, head_dim=3, hidden_size=6, intermediate_size=8,
                      module_widths={"heads.1.layers.2.mlp.down_proj": 8,
                                     "heads.1.layers.2.self_attn.o_proj": 12, **widths})


def scored(tmp_path, units, *, target="mlp.down_proj", tensors=None):
    run = write_run(tmp_path / "scores", tensors or {KEY: torch.tensor(SCORES)})
    e = entry(operation=ZERO, kind="linear", target=target, layer=2,
              channels=attrs.evolve(units, run=run))
    return select_units(e, facts=facts(), sources=RunSources())


def hand_lowest(k):  # sort (score, index) pairs by hand
    return sorted(i for _, i in sorted((s, i) for i, s in enumerate(SCORES))[:k])


def hand_highest(k):
    return sorted(i for _, i in sorted((-s, i) for i, s in enumerate(SCORES))[:k])


@pytest.mark.parametrize("k", range(1, 8))
def test_lowest_and_highest_against_hand_sorted_scores_with_ties(tmp_path, k):
    low = scored(tmp_path, ir.Units(kind="lowest", metric="channel_contribution", count=k))
    high = scored(tmp_path, ir.Units(kind="highest", metric="channel_contribution", count=k))
    assert low.units.tolist() == hand_lowest(k)
    assert high.units.tolist() == hand_highest(k)
    assert low.units.dtype == torch.int64 and low.scores_key == KEY


@pytest.mark.parametrize(("fraction", "k"), [(0.25, 2), (0.3, 2), (0.4, 3), (0.5, 4),
                                             (0.0625, 0), (0.1875, 2), (0.3125, 2)])
def test_fraction_rounds_with_pythons_round(tmp_path, fraction, k):
    assert round(fraction * 8) == k  # the rule (0.0625 * 8 = 0.5 -> 0, 2.5 -> 2, 1.5 -> 2)
    units = ir.Units(kind="lowest", metric="channel_contribution", fraction=fraction)
    if k == 0:
        with pytest.raises(DiagnosticError, match="selects 0 of 8 units"):
            scored(tmp_path, units)
    else:
        assert scored(tmp_path, units).units.tolist() == hand_lowest(k)


@pytest.mark.parametrize("units", [
    ir.Units(kind="random", count=8, span=SPAN), ir.Units(kind="random", count=0, span=SPAN),
    ir.Units(kind="random", fraction=0.99, span=SPAN)])
def test_k_must_be_at_least_one_and_below_all(units):
    e = entry(operation=ZERO, kind="linear", target="mlp.down_proj", layer=2, channels=units)
    with pytest.raises(DiagnosticError) as excinfo:
        select_units(e, facts=facts(), sources=RunSources())
    assert excinfo.value.diagnostics[0].span == SPAN


def test_random_is_randperm_of_seed_plus_layer_sorted():
    units = ir.Units(kind="random", count=3, seed=5)
    e = entry(operation=ZERO, kind="linear", target="mlp.down_proj", layer=2, channels=units)
    chosen = select_units(e, facts=facts(), sources=RunSources()).units
    expected = torch.randperm(8, generator=torch.Generator().manual_seed(7))[:3].sort().values
    assert chosen.tolist() == expected.tolist()


def test_list_as_written_and_out_of_range():
    e = entry(operation=ZERO, channels=ir.Units(kind="list", indices=(4, 0, 2)))
    selection = select_units(e, facts=facts(), sources=RunSources())
    assert selection.units.tolist() == [4, 0, 2] and selection.width == 6
    bad = entry(operation=ZERO, channels=ir.Units(kind="list", indices=(1, 6)))
    with pytest.raises(DiagnosticError, match="channel 6 is out of range"):
        select_units(bad, facts=facts(), sources=RunSources())


def test_no_channels_means_every_channel():
    selection = select_units(entry(operation=ZERO), facts=facts(), sources=RunSources())
    assert selection.units.tolist() == list(range(6))
    assert selection.channels.tolist() == list(range(6))


def test_kv_heads_expand_to_their_query_heads_channels(tmp_path):
    # 4 query heads, 2 KV heads, head_dim 3: KV group 1 = query heads 2, 3 = channels 6..11
    key = "importance/kv_head_contribution/head1/layers.2.self_attn.o_proj/score"
    units = ir.Units(kind="highest", metric="kv_head_contribution", count=1)
    selection = scored(tmp_path, units, target="self_attn.o_proj",
                       tensors={key: torch.tensor([0.2, 0.8])})
    assert selection.kv and selection.units.tolist() == [1]
    assert selection.channels.tolist() == [6, 7, 8, 9, 10, 11]
    hand = [c for q in (2, 3) for c in range(q * 3, (q + 1) * 3)]
    assert selection.channels.tolist() == hand


def test_kv_expansion_by_hand_for_every_group():
    f = ModelFacts(n_heads=8, n_kv_heads=2, head_dim=2, hidden_size=16, intermediate_size=8)
    r = 8 // 2
    hand = [c for g in (0, 1) for q in range(g * r, g * r + r) for c in range(q * 2, q * 2 + 2)]
    assert f.kv_channels(torch.tensor([0, 1])).tolist() == hand


def test_scores_on_a_site_are_a_diagnostic():
    units = ir.Units(kind="lowest", run="x", metric="channel_contribution", count=1, span=SPAN)
    with pytest.raises(DiagnosticError, match="not a module"):
        select_units(entry(operation=ZERO, channels=units), facts=facts(),
                     sources=RunSources())
