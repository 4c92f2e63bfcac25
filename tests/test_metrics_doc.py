"""docs/metrics.md explains every importance metric the language has (issue 16): each one
gets a section, and each field the metric stores (its manifest `meaning`) is named there, so
a metric or field added to `expc.spec.vocabulary.METRICS` cannot go unexplained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expc.spec.vocabulary import METRICS

DOC = (Path(__file__).resolve().parents[1] / "docs/metrics.md").read_text(encoding="utf-8")


def section(name: str) -> str:
    """The text under `## \\`name\\`` up to the next `## ` heading ('' when absent)."""
    found = re.search(rf"^## `{name}`\n(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    return found.group(1) if found else ""


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_and_field_is_explained(name):
    text = section(name)
    assert text, f"docs/metrics.md has no section `## \\`{name}\\``"
    for field, _ in METRICS[name].meaning:
        assert f"`{field}`" in text, f"docs/metrics.md, {name}: field `{field}` not explained"
    for word in ("**unit**", "**fields**", "**direction**", "vs ModelOpt"):
        assert word in text, f"docs/metrics.md, {name}: says nothing under {word}"
