"""A run started from Python on a loaded IR records the spec file's path and text, as
`expc run` does (issue 16: it recorded `<ir>` and a JSON blob the report showed)."""

from __future__ import annotations

from pathlib import Path

import expc

QUICKSTART = Path(__file__).resolve().parents[2] / "examples/quickstart.exp"


def test_a_loaded_spec_records_its_file(tmp_path):
    spec = expc.load(QUICKSTART, overrides=["data.limit=16"])
    expc.run(spec, out=tmp_path / "nb")
    recorded = expc.open_run(tmp_path / "nb").manifest["spec"]
    assert recorded["path"] == str(QUICKSTART)
    text = QUICKSTART.read_text(encoding="utf-8")
    assert recorded["text"].startswith(text)
    assert "overrides included" in recorded["text"][len(text):]
    assert recorded["ir_sha256"]
