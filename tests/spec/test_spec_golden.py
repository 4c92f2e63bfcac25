"""Golden tests: the exact text, JSON and GitHub renderings of the diagnostics of bad specs.

Each `golden/NAME.exp` sits beside `NAME.txt`, `NAME.json` and `NAME.github`. Regenerate
after an intended change with `EXPC_UPDATE_GOLDEN=1 pytest tests/spec/test_golden.py` and
review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from expc.spec.diagnostics import render_github, render_json, render_text
from expc.spec.loader import check_file

HERE = Path(__file__).parent
CASES = sorted(p.stem for p in (HERE / "golden").glob("*.exp"))
RENDERERS = {"txt": render_text, "json": render_json, "github": render_github}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("ext", sorted(RENDERERS))
def test_golden(monkeypatch, name, ext):
    monkeypatch.chdir(HERE)
    diagnostics = check_file(f"golden/{name}.exp", check_model=True)
    assert diagnostics, "a golden case must produce diagnostics"
    rendered = RENDERERS[ext](diagnostics) + "\n"
    expected = HERE / "golden" / f"{name}.{ext}"
    if os.environ.get("EXPC_UPDATE_GOLDEN"):
        expected.write_text(rendered)
    assert rendered == expected.read_text()
