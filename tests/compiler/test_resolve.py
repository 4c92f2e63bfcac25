"""Resolve: every plan entry finds its node; an entry the model cannot serve is a diagnostic."""

from __future__ import annotations

import attrs
import pytest

from compiler_support import capture, metric, plan_of, trace
from expc.compiler.manager import run_passes
from expc.compiler.nodes import TAPS_META
from expc.compiler.resolve import resolve
from expc.spec.diagnostics import DiagnosticError, Span


def _labelled(gm) -> dict[str, list[str]]:
    return {n.name: [e.key for e in n.meta[TAPS_META]] for n in gm.graph.nodes
            if n.meta.get(TAPS_META)}


def test_each_entry_labels_its_node(model):
    resid, pattern = capture("resid_out", 1), capture("attn_pattern", 3, 1)
    down = metric("l2_norm", "mlp.down_proj", 3, 2)
    traced = trace(model)
    resolved = resolve(traced, plan=plan_of(resid, pattern, down))
    labelled = {n.name: n for n in resolved.graph.nodes if n.meta.get(TAPS_META)}
    assert len(labelled) == 3
    by_key = {e.key: n for n in labelled.values() for e in n.meta[TAPS_META]}
    assert by_key[resid.key].args[1:] == ("resid_out", 1, None)
    assert by_key[pattern.key].args[5:] == (3, 1)  # the fused attention of layer 3, head 1
    assert by_key[down.key].op == "call_module"
    assert by_key[down.key].target == "heads.2.layers.3.mlp.down_proj"
    assert _labelled(traced) == {}  # resolve is pure


def test_an_entry_without_a_node_is_a_diagnostic_on_its_line(model):
    span = Span(path="x.exp", line=7, col=5)
    missing_module = attrs.evolve(metric("l2_norm", "mlp.down_proj", 1), span=span,
                                  module_path="layers.1.mlp.no_such_proj")
    missing_head = attrs.evolve(capture("resid_out", 3, 5), span=span)
    with pytest.raises(DiagnosticError) as info:
        plan = plan_of(missing_module, missing_head, capture("resid_out", 0))
        run_passes(trace(model), [resolve.configured(plan=plan)])
    diagnostics = info.value.diagnostics
    assert len(diagnostics) == 2
    assert {d.code for d in diagnostics} == {"compile-unresolved"}
    assert all(d.span == span for d in diagnostics)
    messages = " ".join(d.message for d in diagnostics)
    assert "layers.1.mlp.no_such_proj" in messages and "head 5" in messages
