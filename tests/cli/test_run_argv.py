"""`expc run --nproc N`: each torchrun rank gets the same command line, less `--nproc`."""

from __future__ import annotations

import pytest

from expc.cli.run import argv_without
from expc.cli.run import command as run_command

CASES = [
    ["spec.exp"],
    ["spec.exp", "--nproc", "2"],
    ["spec.exp", "--out", "runs/x", "--resume", "--force", "-q", "--nproc=3"],
    ["spec.exp", "--set", "data.limit=8", "--set", "seed=1", "--nproc", "2", "--quiet"],
]


@pytest.mark.parametrize("args", CASES)
def test_rank_argv_parses_back_to_the_same_values_without_nproc(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.exp").write_text("")
    ctx = run_command.make_context("run", list(args))
    argv = argv_without(ctx, "nproc")
    assert not any(a.startswith("--nproc") for a in argv)
    again = run_command.make_context("run", argv)
    assert {**again.params, "nproc": ctx.params["nproc"]} == ctx.params
    assert again.params["nproc"] == 1


def test_rank_argv_spells_each_option_by_its_first_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.exp").write_text("")
    ctx = run_command.make_context("run", ["-q", "spec.exp", "--set", "seed=1", "--nproc", "2"])
    assert argv_without(ctx, "nproc") == ["spec.exp", "--set", "seed=1", "--quiet"]
