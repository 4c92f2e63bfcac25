"""Fuzzing the front end with mutated example specs.

Deletions, swaps, junk and non-UTF-8 bytes, huge numbers and deep nesting: whatever the
input, `check_file` returns diagnostics (never raises), and every diagnostic's span lies
inside the file it names.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from expc.spec.diagnostics import Diagnostic
from expc.spec.formatter import format_text
from expc.spec.loader import check_file

EXAMPLES = Path(__file__).parents[2] / "examples"
SPECS = sorted(p.name for p in EXAMPLES.glob("*.exp"))
JUNK = [b"\xff", b"\x00", b"\xc3", b"{", b"}", b"[", b"]", b'"', b"#", b"=", b"*", b":", b"-",
        b"\n", b"(", b")", b",", b"\xe2\x80\xae", b"experiment", b"extends", b"of heads", b"as"]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    op = rng.choice(["delete", "swap", "junk", "huge", "nest", "duplicate", "truncate"])
    i, j = sorted(rng.randrange(len(data) + 1) for _ in range(2))
    if op == "delete":
        return data[:i] + data[j:]
    if op == "swap":
        k = rng.randrange(len(data) + 1)
        return data[:i] + data[j:k] + data[i:j] + data[k:] if k > j else data[j:] + data[:j]
    if op == "junk":
        return data[:i] + b"".join(rng.choices(JUNK, k=rng.randint(1, 4))) + data[i:]
    if op == "huge":
        digits = rng.choice([b"9" * 30, b"1" * 5000, b"-" + b"9" * 40, b"1e999", b"0.0000001"])
        return data.replace(b"4", digits, 1) if rng.random() < 0.5 else data[:i] + digits + data[i:]
    if op == "nest":
        depth = rng.choice([5, 17, 3000])
        return data.replace(b"= 0", b"= " + b"[" * depth + b"0" + b"]" * depth, 1)
    if op == "duplicate":
        return data[:j] + data[i:j] + data[j:]
    return data[:i]


def _assert_span_valid(d: Diagnostic, files: dict[str, list[str]]) -> None:
    s = d.span
    assert s.line >= 1 and s.col >= 1, d
    assert (s.end_line, s.end_col) > (s.line, s.col) or (s.end_line == s.line and s.end_col > s.col), d
    lines = files.get(s.path)
    if lines is None:
        lines = Path(s.path).read_bytes().decode("utf-8", "replace").split("\n")
        files[s.path] = lines
    assert s.line <= len(lines), d
    assert s.col <= len(lines[s.line - 1]) + 1, d


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", SPECS)
def test_mutated_examples_only_ever_give_valid_diagnostics(workspace, name):
    rng = random.Random(name)
    original = (workspace / "examples" / name).read_bytes()
    target = workspace / "examples" / f"fuzz_{name}"
    for round_ in range(60):
        data = original
        for _ in range(rng.randint(1, 3)):
            data = _mutate(data, rng)
        target.write_bytes(data)
        diags = check_file(str(target.relative_to(workspace)), check_model=round_ % 4 == 0)
        files: dict[str, list[str]] = {}
        for d in diags:
            _assert_span_valid(d, files)


@pytest.mark.parametrize("name", SPECS)
def test_mutated_examples_that_parse_also_format(name):
    rng = random.Random("fmt" + name)
    original = (EXAMPLES / name).read_bytes()
    for _ in range(40):
        text = _mutate(original, rng).decode("utf-8", "replace")
        try:
            once = format_text(text)
        except Exception as exc:  # only a clean DiagnosticError may come out
            assert type(exc).__name__ == "DiagnosticError", exc
            continue
        assert format_text(once) == once
