"""Graph breaks for `torch.compile` that cost nothing until something compiles.

Taps and edits must run eagerly under `torch.compile` (`compile = true`): their sinks and
edit functions are the runtime's Python, which must see real tensors, never fake ones. The
decorator that says so, `torch.compiler.disable`, imports `torch._dynamo` when it is
applied — about 1.2 s, as much as importing torch itself, paid by every `expc run` even
though almost none compiles. `eager_under_compile` marks a module class instead: its
`forward` is wrapped with `torch.compiler.disable` the moment `torch._dynamo` finishes
importing (`torch.compile` imports it before it traces anything), or at once when it is
already imported. The wrapped class is then exactly what the decorator would have made.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

import torch

DYNAMO = "torch._dynamo"
_MARKED: list[type[torch.nn.Module]] = []


def _disable(cls: type[torch.nn.Module]) -> None:
    if not getattr(cls.forward, "_torchdynamo_disable", False):
        cls.forward = torch.compiler.disable(cls.forward)


def _disable_marked() -> None:
    for cls in _MARKED:
        _disable(cls)


class _AfterDynamoImport(importlib.abc.MetaPathFinder):
    """Finds `torch._dynamo` like the rest of `sys.meta_path` would, and runs
    `_disable_marked` right after its module has executed; then leaves `sys.meta_path`."""

    def find_spec(self, name, path, target=None):
        if name != DYNAMO:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _disable_marked()

        spec.loader.exec_module = exec_module
        return spec


_HOOK = _AfterDynamoImport()


def eager_under_compile(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """Class decorator: `cls.forward` is a graph break under `torch.compile` (see above)."""
    _MARKED.append(cls)
    if DYNAMO in sys.modules:
        _disable(cls)
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
    return cls
