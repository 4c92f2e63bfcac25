"""The pass manager: runs the compiler's passes in order and checks the graph after each.

Each pass is a pure function `GraphModule -> GraphModule` (configured with
`functools.partial`), written as an in-place rewrite and made pure by `graph_pass`. After
every pass the graph is linted (and by default recompiled), so a pass that leaves a broken
graph is caught at once. A failure is reported as a `CompilerPassError`
naming the pass and the node it was working on; passes walk the graph with `visit(graph)`,
which records that node. A `DiagnosticError` (a user error, e.g. a site the model lacks)
passes through untouched for the CLI to render.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence

import torch.fx as fx

from expc.spec.diagnostics import DiagnosticError

log = logging.getLogger(__name__)

Pass = Callable[[fx.GraphModule], fx.GraphModule]

_current_node: contextvars.ContextVar[fx.Node | None] = contextvars.ContextVar(
    "expc_compiler_current_node", default=None)


class CompilerPassError(RuntimeError):
    """A compiler pass failed: which pass, at which node, and why."""

    def __init__(self, *, pass_name: str, node: str | None, cause: BaseException):
        self.pass_name = pass_name
        self.node = node
        where = f" at node `{node}`" if node is not None else ""
        super().__init__(f"compiler pass `{pass_name}` failed{where}: {cause}")


def visit(graph: fx.Graph, *, reverse: bool = False) -> Iterator[fx.Node]:
    """The graph's nodes in order (a snapshot, safe to edit), recording the current one."""
    nodes = list(graph.nodes)
    for node in reversed(nodes) if reverse else nodes:
        _current_node.set(node)
        yield node


def fresh_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule with a copied graph sharing `gm`'s modules."""
    return fx.GraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__)


def graph_pass(in_place: Callable[..., fx.GraphModule]) -> Callable[..., fx.GraphModule]:
    """Make a pass written as an in-place rewrite into a pure function.

    Called directly, the pass works on a copy and leaves its input alone. `run_passes`,
    which owns the graph module it is given, calls the in-place rewrite (`.in_place`) and
    saves a graph copy per pass — on a 32-layer model each copy costs about as much as
    tracing.
    """

    @functools.wraps(in_place)
    def pure(gm: fx.GraphModule, /, **params) -> fx.GraphModule:
        result = in_place(fresh_copy(gm), **params)
        result.recompile()
        return result

    pure.in_place = in_place
    return pure


def pass_name(fn: Pass) -> str:
    return getattr(getattr(fn, "func", fn), "__name__", repr(fn))


def _in_place(fn: Pass) -> Pass:
    """The in-place form of a pass (or of a `functools.partial` of one), if it has one."""
    if isinstance(fn, functools.partial):
        inner = getattr(fn.func, "in_place", fn.func)
        return functools.partial(inner, *fn.args, **fn.keywords)
    return getattr(fn, "in_place", fn)


def run_passes(gm: fx.GraphModule, passes: Sequence[Pass], *,
               recompile_each: bool = True) -> fx.GraphModule:
    """Apply `passes` in order to `gm`, which the manager owns and rewrites in place.

    The graph is linted after every pass. With `recompile_each` the Python code is also
    regenerated after every pass (catching a pass whose graph cannot be turned into code
    at the pass itself); without it, once at the end, which is what keeps compiling a
    32-layer model fast.
    """
    for fn in passes:
        name = pass_name(fn)
        token = _current_node.set(None)
        started = time.perf_counter()
        try:
            gm = _in_place(fn)(gm)
            _current_node.set(None)
            gm.graph.lint()
            if recompile_each:
                gm.recompile()
        except DiagnosticError:
            raise
        except Exception as exc:
            node = _current_node.get()
            raise CompilerPassError(pass_name=name, node=None if node is None else node.name,
                                    cause=exc) from exc
        finally:
            _current_node.reset(token)
        log.debug("pass %s: %d nodes, %.1f ms", name, len(gm.graph.nodes),
                  1e3 * (time.perf_counter() - started))
    if not recompile_each:
        try:
            gm.recompile()
        except Exception as exc:
            raise CompilerPassError(pass_name="recompile", node=None, cause=exc) from exc
    return gm
