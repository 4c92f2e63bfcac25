"""`HydraSplit`: the spec's `hydra` block resolved against a model's layer count."""

import pytest

from expc.models.hydra_split import HydraSplit
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
    (ir.Hydra(trunk=4, heads=2), "hydra-trunk", "between 1 and 3 for a 4-layer model, got 4"),
    (ir.Hydra(trunk=0, heads=2), "hydra-trunk", "between 1 and 3"),
    (ir.Hydra(trunk=2, heads=0), "hydra-heads", "at least one head, got 0"),
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
