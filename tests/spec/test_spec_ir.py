"""Selectors and the IR's value semantics."""

from __future__ import annotations

import attrs
import pytest

from expc.spec import ir
from expc.spec.diagnostics import Span


@pytest.mark.parametrize(("selector", "expected"), [
    (ir.IndexSelector(all=True), (0, 1, 2, 3, 4)),
    (ir.IndexSelector(items=(-1,)), (4,)),
    (ir.IndexSelector(items=(0, -5)), (0,)),
    (ir.IndexSelector(items=(ir.Slice(start=1, stop=3),)), (1, 2)),
    (ir.IndexSelector(items=(ir.Slice(start=-2),)), (3, 4)),
    (ir.IndexSelector(items=(ir.Slice(stop=2), 4, 1)), (0, 1, 4)),
    (ir.IndexSelector(items=(ir.Slice(start=3, stop=1),)), ()),
    (ir.IndexSelector(items=(ir.Slice(start=2, stop=99),)), (2, 3, 4)),
])
def test_resolve(selector, expected):
    assert selector.resolve(5) == expected


def test_resolve_rejects_an_index_out_of_range():
    sel = ir.IndexSelector(items=(5, -6, 2))
    assert sel.out_of_range(5) == (5, -6)
    with pytest.raises(IndexError):
        sel.resolve(5)


def test_text_round_trips_the_written_form():
    sel = ir.IndexSelector(items=(ir.Slice(start=1, stop=3), -1, ir.Slice(stop=2), ir.Slice(start=4)))
    assert sel.text() == "1:3, -1, :2, 4:"
    assert ir.IndexSelector(all=True).text() == "*"


def test_spans_do_not_take_part_in_equality():
    a = ir.Hydra(trunk=1, heads=2, span=Span(path="a.exp", line=3))
    b = ir.Hydra(trunk=1, heads=2, span=Span(path="b.exp", line=9))
    assert a == b and hash(a) == hash(b)
    assert a != attrs.evolve(a, heads=3)


def test_nodes_are_frozen_and_keyword_only():
    h = ir.Hydra(trunk=1, heads=2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        h.trunk = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        ir.Hydra(1, 2)  # type: ignore[misc]


def test_importance_param_lookup():
    imp = ir.Importance(metric="iterative_channel", module="mlp.down_proj", layers=ir.IndexSelector(all=True),
                        params=(ir.Param(name="iterations", value=4),))
    assert imp.param("iterations") == 4
    with pytest.raises(KeyError):
        imp.param("calibration_x")
