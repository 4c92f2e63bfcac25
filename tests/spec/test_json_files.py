"""Every JSON object file expc reads fails the same way: one diagnostic at the file."""

import pytest

from expc.spec.diagnostics import DiagnosticError
from expc.spec.json_files import read_json_object


def _diagnostic(path):
    with pytest.raises(DiagnosticError) as info:
        read_json_object(path, what="the cursor", code="some-code")
    (d,) = info.value.diagnostics
    assert d.code == "some-code" and d.span.path == str(path)
    return d


def test_an_object_is_returned(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"a": [1, 2], "b": null}')
    assert read_json_object(path, what="x", code="c") == {"a": [1, 2], "b": None}


def test_a_syntax_error_points_at_its_line_and_column(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{\n  "a": 1,\n  "b": ,\n}')
    d = _diagnostic(path)
    assert d.message.startswith("the cursor is not valid JSON: Expecting value")
    assert (d.span.line, d.span.col) == (3, 8)


@pytest.mark.parametrize(("text", "found"), [("[]", "list"), ('"x"', "str"), ("3", "int")])
def test_anything_but_an_object_is_refused(tmp_path, text, found):
    path = tmp_path / "a.json"
    path.write_text(text)
    assert _diagnostic(path).message == f"the cursor must hold a JSON object, found {found}"


def test_nesting_too_deep_for_the_decoder_is_a_syntax_error(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert _diagnostic(path).message == "the cursor is not valid JSON: nested too deeply"


def test_unreadable_files_are_diagnostics(tmp_path):
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    assert _diagnostic(binary).message.startswith("cannot read the cursor: ")
    assert _diagnostic(tmp_path / "absent.json").message.startswith("cannot read the cursor: ")
