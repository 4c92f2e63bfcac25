"""Atomic writes (runtime/atomic.py): a crash at the rename leaves the old file, whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from expc.runtime import atomic
from expc.runtime.atomic import write_bytes_atomic, write_json_atomic
from expc.runtime.atomic_tensors import save_safetensors_atomic


class Crash(Exception):
    pass


def crashing_replace(*args, **kwargs):
    raise Crash


def test_new_content_replaces_old(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2, "b": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 2, "b": "é"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]


def test_permissions_follow_the_umask_not_the_temp_file(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("writer, old, new", [
    (write_bytes_atomic, b"old bytes", b"new bytes that are longer"),
    (write_json_atomic, {"v": "old"}, {"v": "new" * 100}),
])
def test_crash_at_rename_keeps_old_file_and_no_temp(tmp_path, monkeypatch, writer, old, new):
    path = tmp_path / "f"
    writer(path, old)
    before = path.read_bytes()
    monkeypatch.setattr(atomic.os, "replace", crashing_replace)
    with pytest.raises(Crash):
        writer(path, new)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_crash_while_writing_safetensors_keeps_old_tensors(tmp_path, monkeypatch):
    path = tmp_path / "r.safetensors"
    save_safetensors_atomic(path, {"x": torch.arange(4.0)}, metadata={"k": "v"})
    monkeypatch.setattr(atomic.os, "replace", crashing_replace)
    with pytest.raises(Crash):
        save_safetensors_atomic(path, {"x": torch.zeros(1000), "y": torch.ones(2)})
    loaded = load_file(str(path))
    assert list(loaded) == ["x"] and torch.equal(loaded["x"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["r.safetensors"]


def test_crash_before_rename_keeps_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "replace", crashing_replace)
    with pytest.raises(Crash):
        write_bytes_atomic(tmp_path / "f", b"data")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_takes_views_shared_storage_and_non_contiguous(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {"row": base[1], "whole": base, "t": base.t(), "again": base}
    path = tmp_path / "r.safetensors"
    save_safetensors_atomic(path, tensors)
    loaded = load_file(str(path))
    for key, tensor in tensors.items():
        assert torch.equal(loaded[key], tensor)


def test_stale_temps_are_removed_on_request(tmp_path):
    (tmp_path / ".a.json.1-abc.tmp").write_text("torn")
    (tmp_path / ".b.json.1-abc.tmp").write_text("torn")
    (tmp_path / "a.json").write_text("{}")
    atomic.remove_stale_temps(tmp_path, accept=lambda name: name.startswith(".a."))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.json.1-abc.tmp", "a.json"]


WRITER = """
import sys
from expc.runtime.atomic import write_json_atomic
path = sys.argv[1]
i = 0
while True:
    i += 1
    write_json_atomic(path, {"i": i, "pad": str(i % 10) * 200_000})
"""


def test_sigkill_mid_write_leaves_a_whole_file(tmp_path):
    path = tmp_path / "f.json"
    for delay in (0.05, 0.2, 0.4):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        try:
            deadline = time.monotonic() + 30
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        record = json.loads(path.read_text(encoding="utf-8"))
        assert record["pad"] == str(record["i"] % 10) * 200_000
