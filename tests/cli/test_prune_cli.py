"""`expc prune` on the command line: exit 0 with a one-line summary, 1 with a rendered
diagnostic for bad input, 2 for a usage error (both or neither of --fraction / --keep)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from prune_support import build, layer_run  # noqa: E402

from expc.cli import main  # noqa: E402


def _expc(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    build("llama", folder / "ckpt")
    return layer_run(folder / "run", folder / "ckpt", [0.3, 0.1, 0.2])


def test_prune_writes_and_summarises(capsys, run, tmp_path):
    code, text = _expc(capsys, "prune", str(run), "--metric", "block_influence", "--keep", "2",
                       "-o", str(tmp_path / "out"))
    assert code == 0 and "layers by block_influence, 3 -> 2" in text
    assert (tmp_path / "out" / "config.json").is_file()
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_bad_input_exits_1_with_a_diagnostic(capsys, run, tmp_path):
    code, text = _expc(capsys, "prune", str(run), "--metric", "block_influence",
                       "--fraction", "1", "-o", str(tmp_path / "out"))
    assert code == 1 and "error: --fraction 1.0 of 3 layers (rounds to 3) removes every unit" in text
    assert "manifest.json" in text and "Traceback" not in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("counts", [[], ["--keep", "1", "--fraction", "0.5"]])
def test_fraction_xor_keep_is_a_usage_error(capsys, run, tmp_path, counts):
    code, text = _expc(capsys, "prune", str(run), "--metric", "block_influence", *counts,
                       "-o", str(tmp_path / "out"))
    assert code == 2 and "exactly one of --fraction and --keep" in text
