"""The `.exp` language front end: parser, attrs IR, semantic checks, diagnostics, formatter.

This package never imports torch: `expc check` must stay a fast CI tool. The entry points
import the front end on first use, so `expc.spec.diagnostics` alone stays light for the
other parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from expc.spec.diagnostics import Diagnostic
    from expc.spec.ir import Experiment


def load(path: str | Path, *, overrides: Sequence[str] = (), check_model: bool = True,
         experiment: str | None = None) -> Experiment:
    """The checked IR of the last experiment declared in `path` (or the one named).

    Parses, applies `include`/`extends` and the `--set` style `overrides`, runs every check
    (with `check_model`, also against the model's config.json and the data file) and raises
    `DiagnosticError` with all problems at once.
    """
    from expc.spec.loader import load as _load

    return _load(str(path), overrides=overrides, check_model=check_model, experiment=experiment)


def check_file(path: str | Path, *, overrides: Sequence[str] = (),
               check_model: bool = True) -> tuple[Diagnostic, ...]:
    """Every problem in every experiment `path` declares, sorted and de-duplicated."""
    from expc.spec.loader import check_file as _check_file

    return _check_file(str(path), overrides=overrides, check_model=check_model)


def to_json(experiment: Experiment) -> dict:
    """The IR as JSON-ready data (spans left out), for `--emit ir` and the run manifest."""
    from expc.spec.ir_json import to_json as _to_json

    return _to_json(experiment)
