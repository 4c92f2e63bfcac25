"""The pass manager: runs the compiler's passes in order and checks the graph after each.

A pass is a `GraphPass`: an in-place rewrite together with the keyword arguments it runs
with, so a pipeline is a plain list whose configuration shows in its repr
(`[resolve(plan=Plan(...)), explicit_attention(), ..., prune(keep_output=False)]`). Called
as a function, a pass is pure (`GraphModule -> GraphModule`, working on a copy);
`run_passes`, which owns the graph module it is given, applies each pass in place. After
every pass the graph is linted (and by default recompiled), so a pass that leaves a broken
graph is caught at once. A failure is reported as a `CompilerPassError` naming the pass and
the node it was working on; passes walk the graph with `visit(graph)`, which records that
node. A `DiagnosticError` (a user error, e.g. a site the model lacks) passes through
untouched for the CLI to render.
"""

from __future__ import annotations

import contextvars
import copy
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
import torch.fx as fx

from expc.spec.diagnostics import DiagnosticError

log = logging.getLogger(__name__)

_current_node: contextvars.ContextVar[fx.Node | None] = contextvars.ContextVar(
    "expc_compiler_current_node", default=None)


class CompilerPassError(RuntimeError):
    """A compiler pass failed: which pass, at which node, and why."""

    def __init__(self, *, pass_name: str, node: str | None, cause: BaseException):
        self.pass_name = pass_name
        self.node = node
        where = f" at node `{node}`" if node is not None else ""
        super().__init__(f"compiler pass `{pass_name}` failed{where}: {cause}")


def visit(graph: fx.Graph) -> Iterator[fx.Node]:
    """The graph's nodes in order (a snapshot, safe to edit), recording the current one."""
    for node in list(graph.nodes):
        _current_node.set(node)
        yield node


def fresh_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule with a copied graph sharing `gm`'s modules."""
    return fx.GraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__)


def _frozen_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(params))


@attrs.frozen(kw_only=True, repr=False, eq=False)
class GraphPass:
    """One compiler pass: an in-place rewrite and the keyword arguments it is run with.

    Calling the pass works on a copy and leaves its input alone (extra keyword arguments
    join `params`). `apply` rewrites the given module in place, which is what `run_passes`
    does: it saves a graph copy per pass, and on a 32-layer model each copy costs about as
    much as tracing.
    """

    rewrite: Callable[..., fx.GraphModule]
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_params)

    @property
    def name(self) -> str:
        return self.rewrite.__name__

    def configured(self, **params: Any) -> GraphPass:
        """This pass with `params` added to its keyword arguments."""
        return attrs.evolve(self, params={**self.params, **params})

    def apply(self, gm: fx.GraphModule) -> fx.GraphModule:
        """Rewrite `gm` in place (without recompiling its code)."""
        return self.rewrite(gm, **self.params)

    def __call__(self, gm: fx.GraphModule, /, **params: Any) -> fx.GraphModule:
        result = self.configured(**params).apply(fresh_copy(gm))
        result.recompile()
        return result

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.name}({params})"


def graph_pass(rewrite: Callable[..., fx.GraphModule]) -> GraphPass:
    """Decorate a pass written as an in-place rewrite; configure it with `.configured(...)`."""
    return GraphPass(rewrite=rewrite)


def run_passes(gm: fx.GraphModule, passes: Sequence[GraphPass], *,
               recompile_each: bool = True) -> fx.GraphModule:
    """Apply `passes` in order to `gm`, which the manager owns and rewrites in place.

    The graph is linted after every pass. With `recompile_each` the Python code is also
    regenerated after every pass (catching a pass whose graph cannot be turned into code
    at the pass itself); without it, once at the end, which is what keeps compiling a
    32-layer model fast.
    """
    for step in passes:
        token = _current_node.set(None)
        started = time.perf_counter()
        try:
            gm = step.apply(gm)
            _current_node.set(None)
            gm.graph.lint()
            if recompile_each:
                gm.recompile()
        except DiagnosticError:
            raise
        except Exception as exc:
            node = _current_node.get()
            raise CompilerPassError(pass_name=step.name,
                                    node=None if node is None else node.name,
                                    cause=exc) from exc
        finally:
            _current_node.reset(token)
        log.debug("pass %s: %d nodes, %.1f ms", step.name, len(gm.graph.nodes),
                  1e3 * (time.perf_counter() - started))
    if not recompile_each:
        try:
            gm.recompile()
        except Exception as exc:
            raise CompilerPassError(pass_name="recompile", node=None, cause=exc) from exc
    return gm
