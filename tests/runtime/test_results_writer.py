"""The results writer fsyncs every shard, its folder once per flush (runtime/results_writer.py)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from expc.runtime import atomic
from expc.runtime.aggregate.packing import padded_cat
from expc.runtime.results_writer import ResultsWriter


def test_shards_are_fsynced_each_and_the_folder_once_per_flush(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = atomic.os.fsync

    def fsync(fd):
        synced.append("folder" if atomic.os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    writer = ResultsWriter.resume(tmp_path, rank=0, shard_size=1, first_row=0)
    try:
        for start in range(0, 12, 4):
            writer.cut({"k": torch.arange(start, start + 4, dtype=torch.float32)})
        shards = writer.flush()
        assert synced == ["file"] * 3 + ["folder"]  # one folder fsync for three renames
        assert writer.flush() == shards and synced[-1] == "folder" and len(synced) == 4
    finally:
        writer.close()
    rows = [load_file(tmp_path / shard["file"]) for shard in shards]
    assert [list(r) for r in rows] == [["@0/k"], ["@4/k"], ["@8/k"]]
    assert torch.equal(rows[2]["@8/k"], torch.arange(8, 12, dtype=torch.float32))


def test_padded_cat_copies_each_chunk_into_place_zero_padded():
    chunks = [torch.ones(2, 3, 2), torch.full((1, 1, 4), 2.0), torch.full((2, 3, 4), 3.0)]
    out = padded_cat(chunks)
    assert out.shape == (5, 3, 4)
    assert torch.equal(out[:2, :, :2], chunks[0]) and not out[:2, :, 2:].any()
    assert torch.equal(out[2, :1], torch.full((1, 4), 2.0)) and not out[2, 1:].any()
    assert torch.equal(out[3:], chunks[2])
    assert padded_cat([torch.ones(1, 2, dtype=torch.int64), torch.ones(1, 1)]).dtype == \
        torch.float32  # promoted as torch.cat would
