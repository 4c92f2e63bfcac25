"""The pass manager: order, lint after each pass, errors that name the pass and node, and
passes that show their configuration and stay pure when called."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx

from expc.compiler.manager import CompilerPassError, graph_pass, run_passes, visit
from expc.spec.diagnostics import DiagnosticError, error


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.linear(x)) + 1


def _traced() -> fx.GraphModule:
    return fx.symbolic_trace(Small())


@graph_pass
def fails_at_relu(gm: fx.GraphModule) -> fx.GraphModule:
    for node in visit(gm.graph):
        if node.target is torch.relu:
            raise ValueError("cannot handle relu")
    return gm


@graph_pass
def breaks_the_graph(gm: fx.GraphModule) -> fx.GraphModule:
    with gm.graph.inserting_before(gm.graph.output_node()):
        gm.graph.call_module("no_such_module", (next(iter(gm.graph.nodes)),))
    return gm


@graph_pass
def rejects_the_spec(gm: fx.GraphModule) -> fx.GraphModule:
    raise DiagnosticError(error("a.exp", "bad spec", code="x", line=3))


@graph_pass
def multiplies_the_output(gm: fx.GraphModule, *, by: int) -> fx.GraphModule:
    out = gm.graph.output_node()
    with gm.graph.inserting_before(out):
        multiplied = gm.graph.call_function(torch.mul, (out.args[0], by))
    out.args = (multiplied,)
    return gm


doubles_the_output = multiplies_the_output.configured(by=2)


def test_passes_run_in_order_and_the_result_is_recompiled():
    gm = _traced()
    x = torch.randn(2, 4)
    expected = 4 * gm(x)
    out = run_passes(gm, [doubles_the_output, doubles_the_output])
    assert torch.allclose(out(x), expected)
    assert out.code.count("torch.mul") == 2


def test_a_pass_called_as_a_function_leaves_its_input_alone():
    gm = _traced()
    x = torch.randn(2, 4)
    out = multiplies_the_output(gm, by=3)
    assert torch.allclose(out(x), 3 * gm(x))
    assert "torch.mul" in out.code
    assert "torch.mul" not in gm.code
    assert torch.allclose(doubles_the_output(gm, by=5)(x), 5 * gm(x))  # a call's own arguments win


def test_a_configured_pass_shows_its_name_and_arguments():
    assert doubles_the_output.name == "multiplies_the_output"
    assert repr(doubles_the_output) == "multiplies_the_output(by=2)"
    assert repr(breaks_the_graph) == "breaks_the_graph()"
    assert repr(multiplies_the_output) == "multiplies_the_output()"  # configuring copies


def test_a_failing_pass_is_named_with_its_node():
    with pytest.raises(CompilerPassError) as info:
        run_passes(_traced(), [doubles_the_output, fails_at_relu])
    assert info.value.pass_name == "fails_at_relu"
    assert info.value.node == "relu"
    assert "fails_at_relu" in str(info.value) and "cannot handle relu" in str(info.value)


def test_a_pass_that_breaks_the_graph_is_caught_by_lint():
    with pytest.raises(CompilerPassError) as info:
        run_passes(_traced(), [breaks_the_graph])
    assert info.value.pass_name == "breaks_the_graph"
    assert "no_such_module" in str(info.value)


def test_user_errors_pass_through_as_diagnostics():
    with pytest.raises(DiagnosticError) as info:
        run_passes(_traced(), [rejects_the_spec])
    assert info.value.diagnostics[0].span.line == 3


def test_recompiling_once_at_the_end_gives_the_same_module_and_still_lints():
    gm = _traced()
    x = torch.randn(2, 4)
    expected = 4 * gm(x)
    once = run_passes(gm, [doubles_the_output, doubles_the_output], recompile_each=False)
    assert torch.allclose(once(x), expected)
    with pytest.raises(CompilerPassError) as info:
        run_passes(_traced(), [breaks_the_graph], recompile_each=False)
    assert info.value.pass_name == "breaks_the_graph"
