"""Every method the suite compares, in table order: the peers, then expc's own."""

from __future__ import annotations

from bench.expc_methods import EXPC_METHODS
from bench.peers import PEERS, Method

ALL_METHODS: tuple[Method, ...] = PEERS + EXPC_METHODS


def method_named(name: str) -> Method:
    for method in ALL_METHODS:
        if method.name == name:
            return method
    raise KeyError(f"no method {name!r}; known: {[m.name for m in ALL_METHODS]}")
