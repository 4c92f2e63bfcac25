"""Run folder integrity (runtime/folder_claim.py via RunStore.start): expc never removes or
overwrites a file it did not write, with or without --force (issue 12, items 1 and 7)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from expc.runtime import atomic
from expc.runtime.checkpoint import Cursor, cursor_name, save_checkpoint, state_name
from expc.runtime.run_lock import LOCK_FILE, run_lock
from expc.runtime.store import RunStore
from expc.spec.diagnostics import DiagnosticError
from expc.spec.run_format import CURSOR_PATTERN, STATE_PATTERN

SPEC_A, SPEC_B = "experiment a { }\n", "experiment b { }\n"
MODEL = {"path": "builtin:tiny-llama"}


def start(run_dir, spec=SPEC_A, *, ir=None, **kwargs) -> RunStore:
    return RunStore.start(run_dir, spec_path="a.exp", spec_text=spec,
                          ir=ir or {"name": spec.split()[1]}, model=MODEL,
                          data_source="d.jsonl", **kwargs)


def user_files(folder):
    """A user's folder: expc's file names among others, a checkpoint/ of their own."""
    (folder / "report.html").write_text("my report")
    (folder / "summary.md").write_text("my summary")
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "model.pt").write_bytes(b"my weights")
    (folder / "notes.txt").write_text("mine")
    return snapshot(folder)


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(run_dir, **kwargs) -> str:
    with pytest.raises(DiagnosticError) as excinfo:
        start(run_dir, **kwargs)
    (diag,) = excinfo.value.diagnostics
    return f"{diag.span.path}: {diag.message}"


@pytest.mark.parametrize("force", [False, True])
def test_a_users_folder_is_refused_and_untouched(tmp_path, force):
    before = user_files(tmp_path)
    message = refused(tmp_path, force=force)
    assert message.startswith(f"{tmp_path}: ")
    assert "not an expc run folder" in message and "`report.html`" in message
    assert snapshot(tmp_path) == before and not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("name", ["report.html", "summary.md", "results.safetensors",
                                  "anything"])
def test_any_single_foreign_file_makes_a_folder_foreign(tmp_path, name):
    (tmp_path / name).write_text("x")
    assert f"`{name}`" in refused(tmp_path, force=True)
    assert (tmp_path / name).read_text() == "x"


def test_an_empty_folder_with_only_our_lock_and_temps_is_used(tmp_path):
    stale = tmp_path / ".manifest.json.123-dead.tmp"
    with run_lock(tmp_path):
        stale.write_text("torn")
        start(tmp_path)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    assert LOCK_FILE not in os.listdir(tmp_path)


def test_force_removes_only_expc_files_and_user_files_survive(tmp_path):
    store = start(tmp_path)
    store.write_results({}, {})
    store.finish(samples=0, tokens=0, batches=0, seconds={})
    save_checkpoint(tmp_path / "checkpoint", states={}, cursor=Cursor(
        batches_done=1, samples_done=1, elapsed_seconds=1.0))
    (tmp_path / "report.html").write_text("<html>")  # as `expc report` writes it
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoint" / "model.pt").write_bytes(b"mine too")
    (tmp_path / "checkpoint" / ".rank0-cursor.json.7-dead.tmp").write_text("torn")
    start(tmp_path, SPEC_B, force=True)
    assert sorted(snapshot(tmp_path)) == ["checkpoint/model.pt", "manifest.json", "notes.txt"]
    assert (tmp_path / "checkpoint" / "model.pt").read_bytes() == b"mine too"


def test_only_the_files_the_manifest_claims_are_removed(tmp_path):
    start(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"] = ["results.safetensors"]  # an expc that wrote no report
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "report.html").write_text("the user's own")
    message = refused(tmp_path, spec=SPEC_B, force=True)
    assert message.startswith(str(tmp_path / "report.html"))
    assert "not claimed" in message
    assert (tmp_path / "report.html").read_text() == "the user's own"


def test_a_tampered_files_list_cannot_claim_a_users_file(tmp_path):
    start(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"] += ["notes.txt", "../outside.txt", "*"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path.parent / "outside.txt").write_text("mine")
    start(tmp_path, SPEC_B, force=True)
    assert (tmp_path / "notes.txt").exists() and (tmp_path.parent / "outside.txt").exists()


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("name, make", [
    ("checkpoint", lambda p: p.write_text("a file")),
    ("checkpoint", lambda p: p.symlink_to(p.parent.parent)),
    ("results.safetensors", lambda p: p.mkdir()),
    ("results.safetensors", lambda p: p.symlink_to(p.parent.parent / "elsewhere")),
    ("report.html", lambda p: p.mkdir()),
    ("checkpoint/rank0-cursor.json", lambda p: p.mkdir(parents=True)),
])
def test_an_output_of_the_wrong_kind_is_refused_naming_it(tmp_path, name, make, force):
    run_dir = tmp_path / "run"
    start(run_dir)
    make(run_dir / name)
    message = refused(run_dir, force=force)
    assert message.startswith(f"{run_dir / name}: ")
    assert (run_dir / name).is_symlink() or (run_dir / name).exists()


def test_a_symlinked_or_foreign_manifest_is_not_ours(tmp_path):
    real = tmp_path / "real"
    start(real)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").symlink_to(real / "manifest.json")
    assert "not a plain file" in refused(run_dir, force=True)
    (run_dir / "manifest.json").unlink()
    (run_dir / "manifest.json").write_text('{"name": "webpack"}')
    assert "not a readable expc run manifest" in refused(run_dir, force=True)
    assert (run_dir / "manifest.json").read_text() == '{"name": "webpack"}'


def test_same_experiment_in_another_form_is_not_another_spec(tmp_path):
    start(tmp_path, "experiment a { }\n")
    start(tmp_path, "// a comment\nexperiment a {\n}\n")  # same IR: no --force needed
    assert "another spec" in refused(tmp_path, spec=SPEC_B)


def test_resume_keys_on_the_ir_digest_too(tmp_path):
    start(tmp_path).record_checkpoint(batches_done=1)
    save_checkpoint(tmp_path / "checkpoint", states={}, cursor=Cursor(
        batches_done=1, samples_done=1, elapsed_seconds=1.0))
    store = start(tmp_path, "// reformatted\nexperiment a {\n}\n", ir={"name": "a"},
                  resume=True)
    assert store.resuming and (tmp_path / "checkpoint" / "rank0-cursor.json").exists()


def test_stale_temps_of_a_crashed_run_are_cleaned_on_the_next_start(tmp_path):
    start(tmp_path)
    torn = [tmp_path / ".results.safetensors.1-dead.tmp", tmp_path / ".report.html.2-x.tmp",
            tmp_path / "checkpoint" / ".rank1-state-00000004.safetensors.3-y.tmp"]
    (tmp_path / "checkpoint").mkdir()
    for path in torn:
        path.write_text("torn")
    (tmp_path / ".my-editor-file.tmp").write_text("mine")
    start(tmp_path)
    assert not any(path.exists() for path in torn)
    assert (tmp_path / ".my-editor-file.tmp").exists()


def test_a_read_only_folder_is_a_diagnostic_naming_the_file(tmp_path, monkeypatch):
    start(tmp_path)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.os, "open", read_only)  # chmod does not stop root
    message = refused(tmp_path)
    assert message == (f"{tmp_path / 'manifest.json'}: cannot write `manifest.json`: "
                       "Read-only file system")


def test_a_run_that_cannot_mark_itself_failed_keeps_its_own_error(tmp_path, monkeypatch):
    store = start(tmp_path)
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    store.fail(RuntimeError("the real error"))  # logs, does not replace the real error
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "running"


def test_checkpoint_file_names_are_the_claimed_patterns():
    for rank in (0, 3, 12):
        assert fnmatchcase(cursor_name(rank), CURSOR_PATTERN)
        assert fnmatchcase(state_name(rank, 40), STATE_PATTERN)


@pytest.mark.parametrize("files", ["results.safetensors", [1, 2], {"a": 1}])
def test_a_files_field_that_is_not_a_list_of_names_is_a_damaged_manifest(tmp_path, files):
    start(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"] = files
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert "`files` in manifest.json must be a list" in refused(tmp_path, force=True)


@pytest.mark.parametrize("force", [False, True])
def test_expc_run_into_a_users_folder_exits_1_and_keeps_every_file(tmp_path, force):
    before = user_files(tmp_path)
    args = ["run", "examples/quickstart.exp", "--out", str(tmp_path), "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "expc", *args, *(["--force"] if force else [])],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "not an expc run folder" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "notes.txt", "report.html",
                                            "summary.md"]
