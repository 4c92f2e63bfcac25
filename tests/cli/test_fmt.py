"""`expc fmt`: rewrites in place, `--check` changes nothing and exits 1, syntax errors exit 1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from expc.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"
MESSY = 'experiment a{seed=1 # keep me\n  data{source=jsonl("d.jsonl")}}\n'
CANONICAL = ('experiment a {\n'
             '    seed = 1                             # keep me\n'
             '    data {\n'
             '        source = jsonl("d.jsonl")\n'
             '    }\n'
             '}\n')


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_fmt_rewrites_in_place_and_leaves_no_temporary_files(tmp_path, capsys):
    spec = tmp_path / "a.exp"
    spec.write_text(MESSY)
    code, _, err = run(["fmt", str(spec)], capsys)
    assert code == 0 and "1 file reformatted, 0 unchanged" in err
    assert spec.read_text() == CANONICAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.exp"]
    assert run(["fmt", str(spec)], capsys)[0] == 0
    assert spec.read_text() == CANONICAL


def test_check_changes_nothing_and_exits_1(tmp_path, capsys):
    spec = tmp_path / "a.exp"
    spec.write_text(MESSY)
    code, out, _ = run(["fmt", "--check", str(spec)], capsys)
    assert code == 1 and out.strip() == f"would reformat {spec}"
    assert spec.read_text() == MESSY


def test_check_passes_on_the_examples(tmp_path, capsys):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    files = [str(p) for p in sorted((tmp_path / "examples").glob("*.exp"))]
    assert run(["fmt", "--check", *files], capsys)[0] == 0


def test_syntax_error_is_a_diagnostic_and_the_file_is_untouched(tmp_path, capsys):
    spec = tmp_path / "a.exp"
    spec.write_text("experiment a { seed 1 }\n")
    code, _, err = run(["fmt", str(spec)], capsys)
    assert code == 1 and "a.exp:1:21: error: syntax error: missing `=`" in err
    assert spec.read_text() == "experiment a { seed 1 }\n"
