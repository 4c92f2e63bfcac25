"""`HydraSplit`: the spec's `hydra` block resolved against a model's layer count."""

import pytest

from expc.models.hydra_split import HydraSplit, auto_trunk
from expc.spec import ir
from expc.spec.diagnostics import DiagnosticError, Span


def test_no_hydra_block_is_one_head_holding_no_layers():
    single = HydraSplit.of(None, n_layers=4)
    assert single == HydraSplit.single(4) == HydraSplit(n_layers=4, trunk=4, n_heads=1)
    assert not single.is_split and single.head_layers == range(4, 4)
    assert single.heads_of_layer(3, None) == (None,)


def test_a_split_places_each_layer_in_the_trunk_or_in_every_head():
    split = HydraSplit.of(ir.Hydra(trunk=1, heads=3), n_layers=4)
    assert (split.n_layers, split.trunk, split.n_heads, split.is_split) == (4, 1, 3, True)
    assert list(split.head_layers) == [1, 2, 3]
    assert [split.heads_of_layer(layer, None) for layer in (0, 1)] == [(None,), (0, 1, 2)]
    picked = ir.IndexSelector(items=(2, 0))
    assert split.heads_of_layer(3, picked) == split.selected_heads(picked) == (0, 2)
    assert split.heads_of_layer(0, picked) == (None,)
    assert split.module_path("mlp.down_proj", 3, 1) == "heads.1.layers.3.mlp.down_proj"
    assert split.module_path("mlp.down_proj", 0, None) == "layers.0.mlp.down_proj"


def test_one_head_after_a_trunk_is_still_a_split():
    split = HydraSplit.of(ir.Hydra(trunk=2, heads=1), n_layers=4)
    assert split.is_split and split.heads_of_layer(2, None) == (0,)


@pytest.mark.parametrize(("hydra", "code", "message"), [
    (ir.Hydra(trunk=4, heads=2), "hydra-trunk", "between 0 and 3 for a 4-layer model, got 4"),
    (ir.Hydra(trunk=-1, heads=2), "hydra-trunk", "between 0 and 3"),
    (ir.Hydra(trunk=2, heads=0), "hydra-heads", "at least one head, got 0"),
    (ir.Hydra(trunk=2, heads=3, head_models=("a", "b")), "hydra-heads", "2 checkpoints for 3 heads"),
])
def test_a_split_the_model_cannot_take_is_a_diagnostic(hydra, code, message):
    with pytest.raises(DiagnosticError, match=message) as excinfo:
        HydraSplit.of(hydra, n_layers=4, source="ckpt/config.json")
    (diagnostic,) = excinfo.value.diagnostics
    assert diagnostic.code == code and diagnostic.span.path == "ckpt/config.json"


def test_without_a_source_errors_point_at_the_hydra_block():
    trunk_span = Span(path="p.exp", line=3, col=13, end_line=3, end_col=14)
    block_span = Span(path="p.exp", line=3, col=5, end_line=3, end_col=30)
    with pytest.raises(DiagnosticError) as excinfo:
        HydraSplit.of(ir.Hydra(trunk=9, heads=2, span=block_span, trunk_span=trunk_span), n_layers=4)
    assert excinfo.value.diagnostics[0].span == trunk_span
    with pytest.raises(DiagnosticError) as excinfo:
        HydraSplit.of(ir.Hydra(trunk=1, heads=0, span=block_span, trunk_span=trunk_span), n_layers=4)
    assert excinfo.value.diagnostics[0].span == block_span


def test_trunk_zero_shares_only_the_embeddings():
    split = HydraSplit.of(ir.Hydra(trunk=0, heads=2), n_layers=4)
    assert split.is_split and list(split.head_layers) == [0, 1, 2, 3]
    assert split.heads_of_layer(0, None) == (0, 1)
    assert split.module_path("mlp", 0, 1) == "heads.1.layers.0.mlp"


def _intervention(*items, all_layers=False):
    return ir.Intervention(target="resid_out", target_kind="site",
                           layers=ir.IndexSelector(all=all_layers, items=items),
                           operation=ir.Operation(kind="zero"))


@pytest.mark.parametrize(("interventions", "trunk"), [
    ((), 5),  # none: the deepest split that leaves the heads one layer
    ((_intervention(3),), 3),
    ((_intervention(4, 2), _intervention(5)), 2),  # the smallest layer of any intervention
    ((_intervention(-1),), 5),  # negative layers count from the end
    ((_intervention(ir.Slice(start=1, stop=None)),), 1),
    ((_intervention(all_layers=True),), 0),  # layer 0 intervened: only the embeddings shared
])
def test_trunk_auto_keeps_every_intervention_inside_the_heads(interventions, trunk):
    split = HydraSplit.of(ir.Hydra(trunk=None, heads=3), n_layers=6, interventions=interventions)
    assert (split.trunk, split.n_heads) == (trunk, 3)
    assert auto_trunk(interventions, n_layers=6) == trunk
    for intervention in interventions:  # every intervened layer sits in the heads
        assert all(L >= split.trunk for L in intervention.layers.resolve(6))


def test_trunk_auto_with_a_layer_out_of_range_is_a_diagnostic():
    with pytest.raises(DiagnosticError, match="layer 9 is out of range for a 6-layer model"):
        HydraSplit.of(ir.Hydra(trunk=None, heads=2), n_layers=6, interventions=(_intervention(9),))
