"""Helpers for the spec tests: write a spec into a temporary working directory and check it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from expc.spec.loader import check_file

BASE = """\
experiment t {
    model = "builtin:tiny-llama"
    data {
        source = jsonl("data.jsonl", field = "text")
        batch_size = 2
    }
    BODY
}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory holding a small `data.jsonl`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text('{"text": "hello"}\n{"text": "world"}\n')
    return tmp_path


@pytest.fixture
def write(workdir: Path):
    def _write(text: str, name: str = "spec.exp") -> str:
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return name

    return _write


def spec_with(body: str) -> str:
    """The base experiment with `body` placed among its statements."""
    return BASE.replace("BODY", textwrap.dedent(body).strip().replace("\n", "\n    "))


@pytest.fixture
def diagnose(write):
    """Check a spec text; returns its diagnostics."""

    def _diagnose(text: str, *, check_model: bool = True, overrides=()) -> tuple:
        return check_file(write(text), check_model=check_model, overrides=overrides)

    return _diagnose


def assert_single_diagnostic(diags: tuple, code: str, line: int, message: str,
                             help_: str | None) -> None:
    """Exactly one diagnostic, with this code, line and message (and a help line holding
    `help_`, when given)."""
    assert len(diags) == 1, diags
    (d,) = diags
    assert (d.code, d.span.line) == (code, line), d
    assert message in d.message, d.message
    if help_ is not None:
        assert any(help_ in h for h in d.help), d.help
