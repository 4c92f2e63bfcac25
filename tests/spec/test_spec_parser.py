"""The parser: the quickstart's syntax tree, literals, comments, and named syntax errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from expc.spec import syntax as sx
from expc.spec.diagnostics import DiagnosticError
from expc.spec.ir import IndexSelector, Slice
from expc.spec.parser import MAX_NESTING, decode, parse, parse_value

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.exp"


def _error(text: str):
    with pytest.raises(DiagnosticError) as info:
        parse(text, "x.exp")
    (d,) = info.value.diagnostics
    return d


def test_quickstart_tree():
    doc = parse(QUICKSTART.read_text(), str(QUICKSTART))
    (exp,) = doc.experiments
    kinds = [type(s).__name__ for s in exp.statements]
    assert kinds == ["Assign"] * 4 + ["BlockDecl"] * 2 + ["CaptureStmt"] * 3 + ["ImportanceStmt"] * 5 + ["BlockDecl"]
    last_capture = exp.statements[8]
    assert (last_capture.site, last_capture.name) == ("resid_out", "resid_last")
    assert last_capture.layers == IndexSelector(items=(-1,))
    assert last_capture.heads == IndexSelector(all=True)
    assert (last_capture.span.line, last_capture.span.col) == (22, 5)
    assert len(doc.comments) == 9 and doc.comments[0].line == 1 and not doc.comments[0].trailing


def test_keywords_stay_usable_as_keys():
    doc = parse("experiment a { hydra { heads = 2 trunk = 1 } capture x[0] as heads }")
    block = doc.experiments[0].statements[0]
    assert [a.key for a in block.assigns] == ["heads", "trunk"]
    assert doc.experiments[0].statements[1].name == "heads"


@pytest.mark.parametrize(("text", "expected"), [
    ('"a\\"b\\n\\u00e9"', sx.Str(value='a"b\né')),
    ("'single'", sx.Str(value="single")),
    ("-12", sx.Num(value=-12, text="-12")),
    ("1.5e3", sx.Num(value=1500.0, text="1.5e3")),
    ("cuda:1", sx.Ident(name="cuda:1")),
    ("[1, none, [2]]", sx.ListValue(items=(sx.Num(value=1, text="1"), sx.Ident(name="none"),
                                           sx.ListValue(items=(sx.Num(value=2, text="2"),))))),
    ('jsonl("p", field = "t")', sx.Call(name="jsonl", args=(sx.Str(value="p"),),
                                        kwargs=(sx.KwArg(key="field", value=sx.Str(value="t")),))),
])
def test_values(text, expected):
    assert parse_value(text) == expected


def test_selectors():
    doc = parse("experiment a { capture x[1:3, -1, :2, 4:, 0] }")
    assert doc.experiments[0].statements[0].layers == IndexSelector(items=(
        Slice(start=1, stop=3), -1, Slice(stop=2), Slice(start=4), 0))


def test_comments_inside_strings_are_not_comments():
    doc = parse('experiment a { model = "a#b" # real\n}')
    assert [c.text for c in doc.comments] == ["# real"]
    assert doc.experiments[0].statements[0].value.value == "a#b"


@pytest.mark.parametrize(("text", "fragment", "line", "col"), [
    ("experiment a { seed 0 }", "missing `=` between a key and its value", 1, 21),
    ("experiment a {\n  seed = }", "missing value after `=`", 2, 10),
    ("seed = 0", "inside an `experiment NAME { ... }` block", 1, 1),
    ("experiment a { importance l2_norm mlp.down_proj[*] }", "`importance` needs `at`", 1, 35),
    ("experiment a { capture x[] }", "empty selector", 1, 26),
    ("experiment a {\n  seed = 0\n", "a `{` is never closed", 2, 11),
    ("experiment { }", "an experiment needs a name", 1, 12),
])
def test_named_syntax_errors(text, fragment, line, col):
    d = _error(text)
    assert d.code == "syntax" and fragment in d.message
    assert (d.span.line, d.span.col) == (line, col)


def test_unexpected_token_lists_what_fits():
    d = _error("experiment a { seed = 1 } }")
    assert d.message == "syntax error: unexpected `}`"
    assert d.help == ("expected `experiment`, `include`, end of file",)


def test_unterminated_string_and_stray_character():
    assert _error('experiment a { model = "abc }').message == "unterminated string"
    assert _error("experiment a { x = $ }").message == "unexpected character `$`"


def test_deep_nesting_is_bounded():
    deep = "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)
    assert _error(f"experiment a {{ x = {deep} }}").code == "nesting"
    ok = "[" * MAX_NESTING + "]" * MAX_NESTING
    parse(f"experiment a {{ x = {ok} }}")


def test_very_deep_nesting_does_not_recurse():
    deep = "[" * 50_000 + "]" * 50_000
    assert _error(f"experiment a {{ x = {deep} }}").code == "nesting"


def test_number_beyond_int_conversion_limit():
    assert _error("experiment a { x = " + "9" * 5000 + " }").code == "range"


def test_non_utf8_bytes_point_at_the_byte():
    with pytest.raises(DiagnosticError) as info:
        decode(b"experiment a {\n  model = \"\xff\"\n}", "x.exp")
    d = info.value.diagnostics[0]
    assert (d.code, d.span.line, d.span.col) == ("encoding", 2, 12)


def test_grammar_tables_are_cached_per_user_and_a_broken_cache_is_rebuilt(tmp_path):
    import os
    import subprocess
    import sys

    code = ("from expc.spec.parser import parse, _table_cache\n"
            f"parse(open({str(QUICKSTART)!r}).read())\n"
            "print(_table_cache())\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    cache = Path(first.stdout.strip())
    assert cache.parent == tmp_path / "expc" and cache.is_file()
    cache.write_bytes(b"not a pickle at all")
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert cache.read_bytes() != b"not a pickle at all"  # rebuilt and saved again
