"""Tap modules: the graph nodes through which instrumented values reach the runtime's sinks.

A tap is a `call_module` node whose module calls one sink with the tensors it is fed and
returns nothing, so no value flowing on through the model can change. Every tap lives
under the `expc_taps` submodule, named after its result key, which keeps the generated code
readable (`self.expc_taps.t0_capture_resid_out_1(layers_1_...)`). Taps are marked impure so
that torch.fx's own dead-code elimination keeps them too. A tap is a graph break for
`torch.compile` (`compile = true`; `compiler/graph_break.py`): its sink is the runtime's
Python (aggregation, packing, counting), which must run eagerly on real tensors, never be
traced with fake ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
import torch.fx as fx

from expc.compiler.graph_break import eager_under_compile

TAPS_ROOT = "expc_taps"


@eager_under_compile
class Tap(torch.nn.Module):
    """Feeds one sink; the result key it serves is kept for printing and emitting."""

    _is_impure = True

    def __init__(self, *, key: str, sink: Callable[..., None]):
        super().__init__()
        self.key = key
        self.sink = sink

    def forward(self, *tensors: torch.Tensor) -> None:
        self.sink(*tensors)

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


def ignore(*tensors: torch.Tensor) -> None:
    """The sink used when the caller gives none (e.g. for `expc compile --emit`)."""


class MissingCallbackError(KeyError):
    """The caller's sinks (or edits) lack a key that the plan produces (or rewrites)."""


def callback_for(callbacks: Mapping[str, Callable] | None, key: str, *,
                 default: Callable, what: str) -> Callable:
    """The caller's callback for `key`; `default` when the caller gives none at all."""
    if callbacks is None:
        return default
    if key not in callbacks:
        raise MissingCallbackError(f"no {what} given for `{key}`")
    return callbacks[key]


def _slug(key: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", key).strip("_")


def add_numbered(gm: fx.GraphModule, module: torch.nn.Module, *, root: str, letter: str,
                 key: str) -> str:
    """Register `module` as `{root}.{letter}{i}_{slug(key)}` (i counts `root`'s children) and
    return that target for a `call_module` node."""
    existing = gm.get_submodule(root) if hasattr(gm, root) else None
    index = 0 if existing is None else len(list(existing.children()))
    target = f"{root}.{letter}{index}_{_slug(key)}"
    gm.add_submodule(target, module)
    return target


def add_tap(gm: fx.GraphModule, *, key: str, sink: Callable[..., None]) -> str:
    """Register a `Tap` on `gm` and return its target for a `call_module` node."""
    return add_numbered(gm, Tap(key=key, sink=sink), root=TAPS_ROOT, letter="t", key=key)


def is_tap(node: fx.Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith(TAPS_ROOT + ".")
