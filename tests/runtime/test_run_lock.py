"""One writer per run folder: a second run is refused while the first holds the folder, and a
lock left by a killed run does not block the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from expc.runtime.run_lock import LOCK_FILE, run_lock
from expc.spec.diagnostics import DiagnosticError

HOLD = """
import sys, time
from expc.runtime.run_lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(DiagnosticError) as caught:
            with run_lock(tmp_path / "run"):
                pass
    (diag,) = caught.value.diagnostics
    assert diag.code == "run-folder-locked"
    assert f"pid {os.getpid()}" in diag.message
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released and removed


def test_the_lock_is_free_again_after_the_holder_finishes(tmp_path):
    with run_lock(tmp_path):
        pass
    with run_lock(tmp_path) as path:
        assert path.exists()


def test_another_process_holding_the_folder_blocks_until_it_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DiagnosticError, match=f"pid {holder.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # a killed holder leaves its file behind ...
    with run_lock(tmp_path):  # ... but not its lock
        pass


def test_an_unwritable_place_is_a_diagnostic(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DiagnosticError) as caught:
        with run_lock(tmp_path / "file" / "run"):
            pass
    assert caught.value.diagnostics[0].code == "run-folder"


def test_expc_run_into_a_held_folder_is_refused_and_touches_nothing(tmp_path, capsys):
    from expc.cli import main

    out = tmp_path / "run"
    with run_lock(out):
        with pytest.raises(SystemExit) as info:
            main(["run", "examples/quickstart.exp", "--out", str(out), "--quiet"])
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert info.value.code == 1
    assert "is being written by another expc run" in capsys.readouterr().err
