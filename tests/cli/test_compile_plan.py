"""`expc compile FILE --emit plan` (text and JSON) and `expc check`'s warning when a run's
results would not fit in memory or on disk (a warning: exit 0)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import expc.runtime.result_room as room
from expc.runtime.result_plan import plan_results
from expc.spec import load
from test_compile_ir import run  # the CLI in-process: (exit code, stdout, stderr)

REPO = Path(__file__).parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def project(tmp_path, monkeypatch):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_text_plan_lists_every_key_and_the_total(capsys):
    code, out, _ = run(["compile", "examples/quickstart.exp", "--emit", "plan"], capsys)
    assert code == 0
    plan = plan_results(load("examples/quickstart.exp"))
    lines = out.splitlines()
    assert lines[0] == "# plan of experiment `quickstart` (examples/quickstart.exp)"
    assert lines[1].startswith("# data read and tokenised: 32 samples, the longest 64 tokens")
    rows = [line.split() for line in lines[3:-1]]
    assert [row[0] for row in rows] == [t.key for t in plan.tensors]
    assert rows[0] == ["capture/resid_out_0", "[32,", "64]", "float32", "8,192"]
    assert lines[-1] == "total: 69 tensors, 626.6 KiB (641,600 bytes)"
    assert plan.total_bytes == 641_600


def test_json_plan(capsys):
    code, out, _ = run(["compile", "examples/scoring.exp", "--emit", "plan", "--format", "json",
                        "--set", "data.limit=12", "--set", "data.batch_size=2"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["data"] == {"samples": 12, "longest": None, "tokenised": False}
    assert data["total_bytes"] == sum(t["bytes"] for t in data["tensors"])
    assert data["tensors"][-1] == {"key": "meta/token_count", "shape": [12], "dtype": "int64",
                                   "bytes": 96, "per_sample": True}


def test_plan_needs_the_model(capsys):
    code, _, err = run(["compile", "examples/quickstart.exp", "--emit", "plan", "--no-model"],
                       capsys)
    assert code == 2 and "needs the model's config" in err


def test_plan_of_missing_data_is_a_diagnostic(project, capsys):
    (project / "examples" / "data" / "prompts.jsonl").unlink()
    code, _, err = run(["compile", "examples/scoring.exp", "--emit", "plan"], capsys)
    assert code == 1 and "prompts.jsonl" in err and "Traceback" not in err


def _without_torch(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code +
                          "\nprint('torch' in sys.modules)"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_plan_and_the_check_s_exact_size_import_no_torch():
    out = _without_torch(
        "import expc.runtime.result_room as room\n"
        "room.available_memory = lambda: 1000\n"
        "from expc.cli import main\n"
        "try:\n"
        "    main(['compile', 'examples/quickstart.exp', '--emit', 'plan'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0\n"
        "try:\n"
        "    main(['check', 'examples/quickstart.exp'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0\n")
    assert out.splitlines()[-1] == "False"


def test_check_warns_when_results_exceed_available_memory(monkeypatch, capsys):
    monkeypatch.setattr(room, "available_memory", lambda: 100_000)
    code, _, err = run(["check", "examples/quickstart.exp", "examples/scoring.exp"], capsys)
    assert code == 0
    assert ("examples/quickstart.exp:30:5: warning: the results of `quickstart` would take "
            "626.6 KiB (641,600 bytes), more than the 97.7 KiB of memory available") in err
    assert "--emit plan` lists every tensor" in err
    assert err.strip().endswith("ok: 2 files checked, 1 warning")  # scoring's 14 kB fit


def test_check_warns_in_json_and_for_the_disk(monkeypatch, capsys):
    monkeypatch.setattr(room, "free_disk", lambda folder: 2048)
    code, out, _ = run(["check", "--format", "json", "examples/quickstart.exp"], capsys)
    assert code == 0
    (found,) = json.loads(out)
    assert (found["severity"], found["code"], found["line"]) == ("warning", "results-disk", 30)
    assert "2.0 KiB free on the disk of `runs/quickstart`" in found["message"]


def test_check_tokenises_only_when_the_bound_does_not_fit(monkeypatch, capsys):
    def boom(experiment, **prepared):
        raise AssertionError("the data was tokenised")

    monkeypatch.setattr(room, "plan_results", boom)
    assert run(["check", "examples/quickstart.exp"], capsys)[0] == 0


def test_no_warning_without_the_model_or_readable_data(project, monkeypatch, capsys):
    monkeypatch.setattr(room, "available_memory", lambda: 1)
    code, _, err = run(["check", "--no-model", "examples/quickstart.exp"], capsys)
    assert (code, err.strip()) == (0, "ok: 1 file checked")
    lines = ['{"text": "ok"}\n'] * 40
    lines[2] = "{not json\n"  # the run's reader refuses it; check reads no further
    (project / "examples" / "data" / "prompts.jsonl").write_text("".join(lines))
    code, _, err = run(["check", "examples/quickstart.exp"], capsys)
    assert (code, err.strip()) == (0, "ok: 1 file checked")


def test_a_file_with_errors_gets_errors_only(project, monkeypatch, capsys):
    monkeypatch.setattr(room, "available_memory", lambda: 1)
    (project / "bad.exp").write_text((project / "examples" / "quickstart.exp").read_text()
                                     .replace("seed   = 0", 'seed = "x"'))
    code, _, err = run(["check", "bad.exp"], capsys)
    assert code == 1 and "error:" in err and "warning" not in err


def test_rows_that_stream_to_shards_count_only_as_the_shards_held(project, monkeypatch, capsys):
    """quickstart's 641,600 bytes are nearly all per-sample rows: with 10 kB shards the run
    holds at most three shards of them and its reduced results, so 100 kB of memory do."""
    text = (project / "examples" / "quickstart.exp").read_text()
    assert "output {" in text
    (project / "sharded.exp").write_text(text.replace("output {", 'output {\n    shard_size = "10KB"'))
    monkeypatch.setattr(room, "available_memory", lambda: 100_000)
    exact = room.plan_results

    def untokenised(experiment, **prepared):  # the bound's held rows fit: nothing to measure
        raise AssertionError("the data was tokenised")

    monkeypatch.setattr(room, "plan_results", untokenised)
    code, _, err = run(["check", "sharded.exp"], capsys)
    assert (code, err.strip()) == (0, "ok: 1 file checked")
    monkeypatch.setattr(room, "plan_results", exact)
    monkeypatch.setattr(room, "available_memory", lambda: 20_000)
    code, _, err = run(["check", "sharded.exp"], capsys)
    assert code == 0 and "of them in memory at once" in err
