"""`expc prune`'s writer copies whole tensors and row cuts as byte ranges of the source file
(inside the kernel), gathers other cuts from the file's bytes; what it writes equals slicing
the loaded tensor, and its output is fsynced before it is renamed into place."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from expc.runtime.prune import writer
from expc.runtime.prune.rules import Slice
from expc.runtime.prune.stream import Scratch, read_layout, write_streamed
from expc.runtime.prune.writer import (TensorSource, _entry, _ranges, _row_runs,
                                       staged_folder)


def test_row_runs_group_consecutive_indices():
    assert _row_runs(np.array([0, 1, 2, 5, 7, 8])) == [(0, 3), (5, 1), (7, 2)]


def _source(path, tensors) -> TensorSource:
    save_file(tensors, str(path))
    layout = read_layout([path])
    return TensorSource(files=(tuple(tensors),), sharded=False, folder=None,
                        info=lambda n: layout[n][:2], locate=lambda n: layout[n][2])


@pytest.mark.parametrize("min_run", [1, 1 << 20])  # row cuts copied as ranges, or gathered
def test_cuts_write_what_slicing_gives(tmp_path, monkeypatch, min_run):
    monkeypatch.setattr("expc.runtime.prune.writer.MIN_RUN_BYTES", min_run)
    tensors = {"a": torch.arange(40, dtype=torch.float32).reshape(8, 5),
               "b": torch.arange(12, dtype=torch.bfloat16).reshape(3, 4),
               "c": torch.arange(30, dtype=torch.float32).reshape(5, 6),
               "d": torch.randn(4, 9).to(torch.bfloat16), "e": torch.arange(7) % 2 == 0,
               "f": torch.arange(24, dtype=torch.int64).reshape(2, 3, 4)}
    source = _source(tmp_path / "in.safetensors", tensors)
    cuts = {"a": Slice(key="a", dim=0, index=np.array([0, 1, 4, 6, 7])),
            "b": Slice(key="b"), "c": Slice(key="c", dim=1, index=np.array([1, 4])),
            "d": Slice(key="d", dim=1, index=np.array([0, 2, 3, 8])),
            "e": Slice(key="e", dim=0, index=np.array([1, 2, 6])),
            "f": Slice(key="f", dim=2, index=np.array([0, 3]))}
    entries = [_entry(source, name, cut) for name, cut in cuts.items()]
    assert bool(entries[2].ranges) is False and entries[2].gather is not None  # a column cut
    assert bool(entries[0].ranges) == (min_run == 1)
    scratch = Scratch()
    write_streamed(tmp_path / "out.safetensors", entries, {"format": "pt"}, scratch=scratch)
    write_streamed(tmp_path / "again.safetensors", entries, {"format": "pt"}, scratch=scratch)
    for file in ("out", "again"):  # the reused scratch buffers leave nothing behind
        out = load_file(str(tmp_path / f"{file}.safetensors"))
        for name, cut in cuts.items():
            assert torch.equal(out[name], cut.apply(tensors[name])), name


def test_scattered_small_rows_are_gathered_not_copied_range_by_range(tmp_path):
    source = _source(tmp_path / "in.safetensors", {"a": torch.zeros(64, 4)})
    scattered = Slice(key="a", dim=0, index=np.arange(0, 64, 2))
    assert _ranges(source, "a", scattered, (64, 4)) == ()
    assert len(_ranges(source, "a", Slice(key="a"), (64, 4))) == 1  # a whole tensor is one


def test_staged_folder_fsyncs_every_file_and_both_folders_before_it_is_visible(
        tmp_path, monkeypatch):
    synced = []

    def fsync(path):
        synced.append((path.name, (tmp_path / "o").exists()))

    monkeypatch.setattr(writer, "fsync_path", fsync)
    with staged_folder(tmp_path / "o") as folder:
        (folder / "a.safetensors").write_bytes(b"x")
        (folder / "config.json").write_text("{}")
    temp = f".o.expc-prune-{os.getpid()}.tmp"
    assert synced == [("a.safetensors", False), ("config.json", False), (temp, False),
                      (tmp_path.name, True)]


@pytest.mark.parametrize("kernel", ["memfd", "no memfd", "no sendfile"])
def test_gathered_cuts_reach_the_file_whichever_way_the_platform_allows(
        tmp_path, monkeypatch, kernel):
    if kernel == "no memfd":  # not Linux: the cut is an ordinary buffer, written by `write`
        monkeypatch.delattr(os, "memfd_create", raising=False)
    elif kernel == "no sendfile":  # an output file system without it: `write` the rest
        def refuse(*args):
            raise OSError(22, "Invalid argument")
        monkeypatch.setattr(os, "sendfile", refuse)
    tensors = {"a": torch.randn(6, 10), "b": torch.randn(3, 40)}  # the second grows the cut
    source = _source(tmp_path / "in.safetensors", tensors)
    cuts = {"a": Slice(key="a", dim=1, index=np.array([9, 0, 4])),
            "b": Slice(key="b", dim=1, index=np.arange(0, 40, 3))}
    with Scratch() as scratch:
        write_streamed(tmp_path / "out.safetensors",
                       [_entry(source, name, cut) for name, cut in cuts.items()],
                       {"format": "pt"}, scratch=scratch)
    out = load_file(str(tmp_path / "out.safetensors"))
    for name, cut in cuts.items():
        assert torch.equal(out[name], cut.apply(tensors[name])), name


def test_shards_are_fsynced_as_they_are_finished_and_a_failed_fsync_is_raised(
        tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(writer, "fsync_path", synced.append)
    with writer.synced_behind() as sync:
        for name in ("a", "b"):
            (tmp_path / name).write_bytes(b"x")
            sync(tmp_path / name)
    assert synced == [tmp_path / "a", tmp_path / "b"]

    def broken(path):
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(writer, "fsync_path", broken)
    with pytest.raises(OSError, match="Input/output error"):
        with writer.synced_behind() as sync:
            sync(tmp_path / "a")
