"""expc's own rows in the comparison (filled in as the compiler and runtime land)."""

from __future__ import annotations

from bench.peers import Method

EXPC_METHODS: tuple[Method, ...] = ()
