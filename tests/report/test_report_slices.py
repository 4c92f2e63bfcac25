"""The report of a sharded `full`-capture run reads per-sample tensors a slice at a time
(issue 17): never a whole per-sample tensor, slices whose float64 copies stay near 8 MiB,
and the same page as the same run written to one file."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from safetensors.torch import save_file

import expc
from expc.report import run_folder
from expc.report.build import build_report
from tests.runtime.test_sharded_results import TINY, run

SLICE_BYTES = 8 << 20  # a slice's float64 copy, the report's largest temporary per read


def _record_reads(monkeypatch) -> list[tuple[str, str, int]]:
    """Every whole read (`tensor`, `tensors`) and slice (`chunks`) the report makes:
    (how, key, values read at once)."""
    reads: list[tuple[str, str, int]] = []
    cls = run_folder.RunFolder
    tensor, tensors, chunks = cls.tensor, cls.tensors, cls.chunks

    def size(folder, key, rows=None):
        shape = folder.layout[key][0]
        return math.prod(shape if rows is None else (min(rows, shape[0]), *shape[1:]))

    def one(self, key):
        reads.append(("tensor", key, size(self, key)))
        return tensor(self, key)

    def many(self, keys):
        keys = list(keys)
        reads.extend(("tensor", key, size(self, key)) for key in keys)
        return tensors(self, keys)

    def sliced(self, key, rows):
        reads.append(("chunks", key, size(self, key, rows) if self.layout[key][0] else 1))
        return chunks(self, key, rows)

    monkeypatch.setattr(cls, "tensor", one)
    monkeypatch.setattr(cls, "tensors", many)
    monkeypatch.setattr(cls, "chunks", sliced)
    return reads


def _one_file_copy(sharded: Path, to: Path) -> Path:
    """The same run (manifest and tensors) with its results joined into one file."""
    tensors = {key: t.contiguous() for key, t in expc.open_run(sharded).tensors.items()}
    shutil.copytree(sharded, to, ignore=shutil.ignore_patterns("results*"))
    save_file(tensors, str(to / "results.safetensors"))
    return to


def test_sharded_report_reads_slices_and_matches_one_file(tmp_path, monkeypatch):
    sharded = run(tmp_path, "sharded", shard_size=TINY)
    whole = _one_file_copy(sharded, tmp_path / "one" / "sharded")
    expected, expected_summary, _ = build_report(whole)
    reads = _record_reads(monkeypatch)
    page, summary, _ = build_report(sharded)
    assert page == expected.replace(str(whole), str(sharded))  # the folder's path aside
    assert summary == expected_summary.replace(str(whole), str(sharded))

    folder = run_folder.open_run_folder(sharded)
    per_sample = {key for key, entry in folder.results.index.items() if entry.get("order") == "run"}
    samples = folder.layout["meta/sample_index"][0][0]
    whole_reads = [(key, n) for how, key, n in reads
                   if how == "tensor" and key in per_sample and n > samples]
    assert not whole_reads, whole_reads  # only [N] vectors (token counts) come whole
    sliced = {key for how, key, _ in reads if how == "chunks"}
    assert {"capture/resid_out_0", "capture/attn_pattern_1"} <= sliced
    for how, key, n in reads:
        if how == "chunks":
            row = math.prod(folder.layout[key][0][1:])
            assert n * 8 <= max(SLICE_BYTES, row * 8), (key, n)


def test_a_slice_of_a_large_full_capture_stays_near_eight_mebibytes_in_float64():
    layout = {"capture/rows_0": ((400, 512, 64), "F32")}  # the 52 MB capture
    rows = run_folder.row_count(layout, "capture/rows_0", run_folder.CHUNK_ELEMENTS)
    assert 1 <= rows < 400 and rows * 512 * 64 * 8 <= SLICE_BYTES
