"""`expc check`: exit codes 0 / 1 / 2 and the three diagnostic formats, through the real entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from expc.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"
BAD = """\
experiment bad {
    model = "builtin:tiny-llama"
    data { source = jsonl("data.jsonl") }
    capture resid_ot[*] { aggregate = full }
    seed = "one"
}
"""


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    (tmp_path / "data.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "bad.exp").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_examples_check_clean(project, capsys):
    files = sorted(str(p.relative_to(project)) for p in (project / "examples").glob("*.exp"))
    code, _, err = run(["check", "--no-model", *files], capsys)
    assert code == 0 and f"ok: {len(files)} files checked" in err
    builtin = [f for f in files if "minilm" not in f and 'run = "' not in Path(f).read_text()]
    assert run(["check", *builtin], capsys)[0] == 0


@pytest.mark.parametrize("example, source", [
    ("ablation", "ablation_means"), ("steering", "steering_source"), ("patching", "patching_clean")])
def test_examples_that_read_an_earlier_run_name_it_until_it_exists(project, capsys, example, source):
    code, out, _ = run(["check", "--format", "json", f"examples/{example}.exp"], capsys)
    diags = json.loads(out)
    assert code == 1 and diags
    assert {d["code"] for d in diags} == {"intervention-source"}
    assert all(f"run folder `runs/{source}` does not exist" in d["message"] for d in diags)


def test_text_format_shows_line_caret_and_help(project, capsys):
    code, out, err = run(["check", "bad.exp"], capsys)
    assert code == 1 and out == ""
    assert err.splitlines()[:4] == [
        "bad.exp:4:13: error: unknown capture site `resid_ot`",
        "   4 |     capture resid_ot[*] { aggregate = full }",
        "     |             ^^^^^^^^",
        "  help: did you mean `resid_out`?",
    ]
    assert "bad.exp:5:12: error: `seed` must be an integer" in err


def test_json_format(project, capsys):
    code, out, _ = run(["check", "bad.exp", "--format", "json"], capsys)
    assert code == 1
    records = json.loads(out)
    assert [(r["line"], r["col"], r["code"]) for r in records] == [(4, 13, "unknown"), (5, 12, "type")]
    assert set(records[0]) >= {"path", "line", "col", "end_line", "end_col", "severity", "code", "message"}


def test_github_format(project, capsys):
    code, out, _ = run(["check", "bad.exp", "--format", "github"], capsys)
    assert code == 1
    assert out.splitlines()[0].startswith("::error file=bad.exp,line=4,col=13,")
    assert out.splitlines()[0].endswith("::unknown capture site `resid_ot` (help: did you mean `resid_out`?)")


def test_json_format_when_clean_is_an_empty_list(project, capsys):
    code, out, _ = run(["check", "examples/quickstart.exp", "--format", "json"], capsys)
    assert (code, json.loads(out)) == (0, [])


def test_overrides_are_checked(project, capsys):
    code, _, err = run(["check", "examples/quickstart.exp", "--set", "data.batch_size=0"], capsys)
    assert code == 1 and "--set:1:17: error: `batch_size` must be >= 1" in err


def test_missing_model_is_an_error_unless_no_model(project, capsys):
    spec = (project / "examples" / "quickstart.exp").read_text().replace("builtin:tiny-llama", "ckpt/absent")
    (project / "local.exp").write_text(spec)
    code, _, err = run(["check", "local.exp"], capsys)
    assert code == 1 and "local.exp:3:14: error: model folder `ckpt/absent` does not exist" in err
    assert run(["check", "--no-model", "local.exp"], capsys)[0] == 0


def test_usage_errors_exit_2(project, capsys):
    assert run(["check", "nope.exp"], capsys)[0] == 2
    assert run(["check", "bad.exp", "--format", "xml"], capsys)[0] == 2
    assert run(["check"], capsys)[0] == 2


def test_internal_error_is_one_line_without_traceback(project, capsys, monkeypatch):
    import expc.cli.check as check_module

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(check_module, "check_experiments", boom)
    code, out, err = run(["check", "bad.exp"], capsys)
    assert code == 2
    assert err.strip() == "internal error: RuntimeError: kaboom (please report)"
    assert "Traceback" not in out + err


def test_non_utf8_file_is_a_diagnostic(project, capsys):
    (project / "latin1.exp").write_bytes(b'experiment a {\n    model = "caf\xe9"\n}\n')
    code, _, err = run(["check", "latin1.exp"], capsys)
    assert code == 1 and "latin1.exp:2:17: error: the file is not valid UTF-8 (byte 0xe9)" in err


def test_examples_that_read_an_earlier_run_check_clean_once_it_ran(project, capsys):
    """The key choice and widths `expc check` expects match what `expc run` writes."""
    for source in ("ablation_means", "steering_source", "patching_clean"):
        assert run(["run", f"examples/{source}.exp", "--quiet"], capsys)[0] == 0
    consumers = ["examples/ablation.exp", "examples/steering.exp", "examples/patching.exp"]
    code, _, err = run(["check", *consumers], capsys)
    assert code == 0, err
