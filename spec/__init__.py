"""The `.exp` language front end: parser, attrs IR, semantic checks, diagnostics, formatter.

This package never imports torch: `expc check` must stay a fast CI tool. The entry points
are imported on first use, so `expc.spec.diagnostics` alone stays light for other parts.

- `load(path, *, overrides=(), check_model=True, experiment=None) -> ir.Experiment`
- `check_file(path, *, overrides=(), check_model=True) -> tuple[Diagnostic, ...]`
- `to_json(experiment) -> dict`
"""

from __future__ import annotations

from typing import Any


def load(path: Any, **kwargs: Any) -> Any:
    """The checked IR of a spec file; see `expc.spec.loader.load`."""
    from expc.spec.loader import load as _load

    return _load(path, **kwargs)


def check_file(path: Any, **kwargs: Any) -> Any:
    """Every diagnostic of a spec file; see `expc.spec.loader.check_file`."""
    from expc.spec.loader import check_file as _check_file

    return _check_file(path, **kwargs)


def to_json(experiment: Any) -> dict:
    """The IR as JSON data; see `expc.spec.ir_json.to_json`."""
    from expc.spec.ir_json import to_json as _to_json

    return _to_json(experiment)
