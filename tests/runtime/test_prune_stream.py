"""`expc prune`'s writer copies whole tensors and row cuts as byte ranges of the source file
(inside the kernel); what it writes equals slicing the loaded tensor."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from expc.runtime.prune.rules import Slice
from expc.runtime.prune.stream import Entry, write_streamed
from expc.runtime.prune.writer import TensorSource, _byte_ranges, _ranges, _row_runs


def test_row_runs_group_consecutive_indices():
    assert _row_runs(torch.tensor([0, 1, 2, 5, 7, 8])) == [(0, 3), (5, 1), (7, 2)]


def test_ranges_write_what_slicing_gives(tmp_path, monkeypatch):
    monkeypatch.setattr("expc.runtime.prune.writer.MIN_RUN_BYTES", 1)  # tiny rows still copied
    tensors = {"a": torch.arange(40, dtype=torch.float32).reshape(8, 5),
               "b": torch.arange(12, dtype=torch.bfloat16).reshape(3, 4),
               "c": torch.arange(30, dtype=torch.float32).reshape(5, 6)}
    save_file(tensors, str(tmp_path / "in.safetensors"))
    located = _byte_ranges([tmp_path / "in.safetensors"])
    source = TensorSource(files=(tuple(tensors),), sharded=False, folder=None,
                          info=lambda n: (tensors[n].dtype, tuple(tensors[n].shape)),
                          read=tensors.__getitem__, locate=located.__getitem__)
    cuts = {"a": Slice(key="a", dim=0, index=torch.tensor([0, 1, 4, 6, 7])),
            "b": Slice(key="b"), "c": Slice(key="c", dim=1, index=torch.tensor([1, 4]))}
    entries = []
    for name, cut in cuts.items():
        dtype, shape = source.info(name)
        ranges = _ranges(source, name, cut, shape)
        assert bool(ranges) == (cut.dim != 1)  # a column cut must be read and gathered
        entries.append(Entry(name=name, dtype=dtype, shape=cut.shape(shape),
                             produce=lambda n=name, c=cut: c.apply(tensors[n]), ranges=ranges))
    write_streamed(tmp_path / "out.safetensors", entries, {"format": "pt"})
    out = load_file(str(tmp_path / "out.safetensors"))
    for name, cut in cuts.items():
        assert torch.equal(out[name], cut.apply(tensors[name])), name


def test_scattered_small_rows_are_gathered_not_copied_range_by_range(tmp_path):
    tensors = {"a": torch.zeros(64, 4)}
    save_file(tensors, str(tmp_path / "in.safetensors"))
    located = _byte_ranges([tmp_path / "in.safetensors"])
    source = TensorSource(files=(("a",),), sharded=False, folder=None,
                          info=lambda n: (torch.float32, (64, 4)), read=tensors.__getitem__,
                          locate=located.__getitem__)
    scattered = Slice(key="a", dim=0, index=torch.arange(0, 64, 2))
    assert _ranges(source, "a", scattered, (64, 4)) == ()
    assert len(_ranges(source, "a", Slice(key="a"), (64, 4))) == 1  # a whole tensor is one
