"""`expc compile --emit ir`: the resolved IR as text or JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from expc.cli import main
from expc.spec import load, to_json

EXAMPLES = Path(__file__).parents[2] / "examples"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.fixture(autouse=True)
def project(tmp_path, monkeypatch):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)


def test_json_ir_is_the_resolved_experiment(capsys):
    code, out, _ = run(["compile", "examples/quickstart_variant.exp", "--emit", "ir", "--format", "json",
                        "--set", "seed=5"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data == to_json(load("examples/quickstart_variant.exp", overrides=["seed=5"]))
    assert (data["name"], data["seed"], data["hydra"], data["data"]["limit"]) == (
        "quickstart_olmo2", 5, {"trunk": 2, "heads": 2, "head_models": []}, 16)
    assert [c["name"] or c["site"] for c in data["captures"]] == ["resid_out", "attn_out", "resid_last", "mlp_out"]


def test_text_ir_is_readable(capsys):
    code, out, _ = run(["compile", "examples/quickstart.exp"], capsys)
    assert code == 0
    assert 'name: "quickstart"' in out and "  trunk: 2" in out
    assert '  - metric: "iterative_channel"' in out


def test_bad_spec_is_diagnosed(tmp_path, capsys):
    (tmp_path / "bad.exp").write_text("experiment a { sed = 1 }\n")
    code, _, err = run(["compile", "bad.exp", "--emit", "ir"], capsys)
    assert code == 1 and "bad.exp:1:16: error: unknown key `sed`" in err
