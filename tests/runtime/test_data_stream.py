"""Streaming data (runtime/data/stream.py, tables.py): a window at a time, the same batches
as one sort of the whole data, exact resume and rank sharding, parquet and saved datasets
giving what jsonl gives, bad table files as diagnostics, memory flat in the data's size."""

from __future__ import annotations

import json
import tracemalloc

import pytest
import torch

from expc.runtime.data.batches import collate, plan_batches
from expc.runtime.data.load import load_data
from expc.runtime.data.stream import DataStream
from expc.runtime.execute import RunRequest, run
from expc.spec import ir
from expc.spec.diagnostics import DiagnosticError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

PAD = 0
TEXTS = [("a" * (1 + (7 * i) % 13)) + f" {i}" for i in range(41)]


class CharTokenizer:
    pad_token_id = PAD

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        ids = [1] + [ord(c) % 90 + 2 for c in text]
        return ids if max_length is None else ids[:max_length]


def write_jsonl(path, texts, *, blank_every: int = 0):
    lines = []
    for i, text in enumerate(texts):
        lines.append(json.dumps({"text": text}))
        if blank_every and i % blank_every == 0:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(folder, texts, *, files: int = 2, row_group: int = 5):
    folder.mkdir(parents=True, exist_ok=True)
    cut = len(texts) // files + 1
    for k in range(files):
        pq.write_table(pa.table({"text": texts[k * cut:(k + 1) * cut]}),
                       folder / f"part-{k}.parquet", row_group_size=row_group)
    return str(folder / "part-*.parquet")


def write_saved_dataset(folder, texts):
    """A `save_to_disk` DatasetDict with a `train` split, written by pyarrow (the layout)."""
    split = folder / "train"
    split.mkdir(parents=True)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    names = []
    for k, part in enumerate((texts[:20], texts[20:])):
        name = f"data-{k:05d}-of-00002.arrow"
        table = pa.table({"text": part})
        with pa.ipc.new_stream(split / name, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=6):
                writer.write_batch(batch)
        names.append({"filename": name})
    (split / "state.json").write_text(json.dumps({"_data_files": names, "_split": None}))
    return str(folder)


def stream(source, *, batch_size=3, window=2, limit=None, rank=0, world_size=1):
    return DataStream.open(source, batch_size=batch_size, window=window, limit=limit,
                           tokenizer=CharTokenizer(), max_length=None, max_positions=None,
                           vocab_size=None, token_fields=(), pad_token_id=PAD, rank=rank,
                           world_size=world_size)


def jsonl_source(tmp_path, texts=TEXTS, **kwargs):
    path = write_jsonl(tmp_path / "d.jsonl", texts, **kwargs)
    return ir.Source(kind="jsonl", path=str(path), field="text")


def rows(batches):
    return [(b.number, b.sample_index.tolist(), b.input_ids.tolist()) for b in batches]


def test_windows_give_the_batches_of_one_windowed_sort_of_the_whole_data(tmp_path):
    source = jsonl_source(tmp_path, blank_every=4)
    whole = load_data(kind="jsonl", path=source.path, tokenizer=CharTokenizer())
    plan = plan_batches(whole.lengths, batch_size=3, bucket_batches=2)
    expected = [collate(whole, plan.batch(k), pad_token_id=PAD, number=k)
                for k in range(len(plan))]
    data = stream(source)
    assert rows(data.batches()) == rows(expected)
    assert len(data) == len(plan) == 14 and data.n_samples == 41
    one_window = stream(source, window=100)  # everything fits: one sort of the whole data
    whole_plan = plan_batches(whole.lengths, batch_size=3, bucket_batches=100)
    assert [b.sample_index.tolist() for b in one_window.batches()] == [
        whole_plan.batch(k).tolist() for k in range(len(whole_plan))]


def test_resume_and_ranks_continue_exactly(tmp_path):
    source = jsonl_source(tmp_path)
    full = rows(stream(source).batches())
    for start in range(len(full) + 1):
        assert rows(stream(source).batches(start)) == full[start:]
    shards = [stream(source, rank=r, world_size=3) for r in range(3)]
    for r, shard in enumerate(shards):
        got = list(shard.batches())
        assert [b.sample_index.tolist() for b in got] == [s for _, s, _ in full[r::3]]
        assert [b.number for b in got] == list(range(len(shard)))
        for n in range(len(shard) + 1):
            assert shard.samples_before(n) == sum(len(s) for _, s, _ in full[r::3][:n])
        tail = [b.sample_index.tolist() for b in shard.batches(2)]
        assert tail == [s for _, s, _ in full[r::3][2:]]


def test_a_sample_outside_the_window_in_hand_is_found_again(tmp_path):
    source = jsonl_source(tmp_path, blank_every=3)
    data = stream(source)
    batches = list(data.batches())
    assert data.batch(0).tolist() == batches[0].sample_index.tolist()  # window 0, read again
    diag = data.sample_error(1, "bad", code="x")
    assert (diag.span.path, diag.span.line, diag.message) == (source.path, 3, "sample 1: bad")


def test_a_bad_line_in_a_later_window_fails_at_its_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", TEXTS)
    path.write_text(path.read_text() + '{"txt": "oops"}\n')
    data = stream(ir.Source(kind="jsonl", path=str(path), field="text"))
    with pytest.raises(DiagnosticError) as excinfo:
        list(data.batches())
    (diag,) = excinfo.value.diagnostics
    assert diag.span.line == 42 and "field `text` is missing" in diag.message


def test_parquet_and_saved_dataset_give_the_jsonl_batches(tmp_path):
    reference = rows(stream(jsonl_source(tmp_path)).batches())
    parquet = ir.Source(kind="parquet", path=write_parquet(tmp_path / "pq", TEXTS),
                        field="text")
    saved = ir.Source(kind="hf_dataset", path=write_saved_dataset(tmp_path / "hf", TEXTS),
                      field="text")
    for source in (parquet, saved):
        assert rows(stream(source).batches()) == reference
        for start in (0, 5, 13):
            assert rows(stream(source).batches(start)) == reference[start:]
    assert stream(parquet, limit=7).n_samples == 7
    assert len(list(stream(parquet, limit=7).batches())) == 3


def test_a_saved_dataset_written_by_datasets_itself_reads_the_same(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS}),
                          "test": datasets.Dataset.from_dict({"text": TEXTS[:3]})}
                         ).save_to_disk(str(tmp_path / "hf"))
    reference = rows(stream(jsonl_source(tmp_path)).batches())
    source = ir.Source(kind="hf_dataset", path=str(tmp_path / "hf"), field="text")
    assert rows(stream(source).batches()) == reference
    test = ir.Source(kind="hf_dataset", path=str(tmp_path / "hf"), field="text", split="test")
    assert stream(test).n_samples == 3


def table_error(source) -> tuple[str, str]:
    with pytest.raises(DiagnosticError) as excinfo:
        list(stream(source).batches())
    diag = excinfo.value.diagnostics[0]
    return diag.span.path, diag.message


def test_bad_table_sources_are_diagnostics_naming_the_file(tmp_path):
    glob = write_parquet(tmp_path / "pq", TEXTS, files=1)
    good = tmp_path / "pq" / "part-0.parquet"
    truncated = tmp_path / "cut" / "part-0.parquet"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:-40])
    path, message = table_error(ir.Source(kind="parquet", path=str(truncated), field="text"))
    assert path == str(truncated) and "cannot read this parquet file" in message
    _, message = table_error(ir.Source(kind="parquet", path=str(tmp_path / "no*.parquet"),
                                       field="text"))
    assert "matches no parquet file" in message
    _, message = table_error(ir.Source(kind="parquet", path=glob, field="txt"))
    assert "has no column `txt`" in message
    folder = write_saved_dataset(tmp_path / "hf", TEXTS)
    _, message = table_error(ir.Source(kind="hf_dataset", path=folder, field="text",
                                       split="validation"))
    assert "has no split `validation`" in message
    arrow = tmp_path / "hf" / "train" / "data-00001-of-00002.arrow"
    arrow.write_bytes(arrow.read_bytes()[:100])
    path, message = table_error(ir.Source(kind="hf_dataset", path=folder, field="text"))
    assert path == str(arrow) and "cannot read this Arrow stream" in message


def test_a_null_text_names_its_file_and_row(tmp_path):
    pq.write_table(pa.table({"text": ["ok", None, "ok"]}), tmp_path / "n.parquet")
    path, message = table_error(ir.Source(kind="parquet", path=str(tmp_path / "n.parquet"),
                                          field="text"))
    assert path == str(tmp_path / "n.parquet") and message == "row 1: field `text` is null"


def peak_bytes(source) -> int:
    tracemalloc.start()
    try:
        for batch in stream(source, batch_size=8, window=4).batches():
            del batch
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_data(tmp_path):
    texts = [f"sample number {i} " + "x" * (i % 50) for i in range(16000)]
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small, large = jsonl_source(tmp_path / "small", texts[:2000]), jsonl_source(tmp_path / "large", texts)
    small_peak, large_peak = peak_bytes(small), peak_bytes(large)
    assert large_peak < 1.5 * small_peak + 64_000, (small_peak, large_peak)


SPEC = """
experiment same {{
    model = "builtin:tiny-llama"
    data {{ source = {source}  batch_size = 3  window = 2  max_length = 24 }}
    capture resid_out[1] {{ aggregate = mean(mask = attention) }}
    capture attn_out[2]  {{ aggregate = full }}
    output {{ dir = "{out}" }}
}}
"""


def test_the_same_texts_through_every_source_give_the_same_results(tmp_path):
    sources = {
        "jsonl": f'jsonl("{write_jsonl(tmp_path / "d.jsonl", TEXTS, blank_every=5)}")',
        "parquet": f'parquet("{write_parquet(tmp_path / "pq", TEXTS)}", field = "text")',
        "hf": f'hf_dataset("{write_saved_dataset(tmp_path / "hf", TEXTS)}", split = "train")',
    }
    results = {}
    for name, source in sources.items():
        spec = tmp_path / f"{name}.exp"
        spec.write_text(SPEC.format(source=source, out=tmp_path / f"run-{name}"))
        results[name] = run(RunRequest(spec_path=spec, quiet=True))
    keys = sorted(results["jsonl"])
    assert "meta/sample_index" in keys and len(keys) >= 5
    for name in ("parquet", "hf"):
        assert sorted(results[name]) == keys
        for key in keys:
            assert torch.equal(results[name][key], results["jsonl"][key]), (name, key)
    assert results["jsonl"]["meta/token_count"].numel() == len(TEXTS)


CHECKED = """experiment c {{
    model = "builtin:tiny-llama"
    data {{ source = {source} }}
}}
"""


@pytest.mark.parametrize("source, words", [
    ('parquet("{tmp}/none*.parquet")', "matches no parquet file"),
    ('parquet("{tmp}/pq/part-*.parquet", field = "body")', "has no column `body`"),
    ('hf_dataset("{tmp}/hf", split = "test")', "has no split `test`"),
    ('hf_dataset("{tmp}/missing")', "dataset folder"),
])
def test_check_finds_bad_table_sources_at_the_spec_line(tmp_path, source, words):
    from expc.spec import check_file
    write_parquet(tmp_path / "pq", TEXTS)
    write_saved_dataset(tmp_path / "hf", TEXTS)
    spec = tmp_path / "c.exp"
    spec.write_text(CHECKED.format(source=source.format(tmp=tmp_path)))
    (diag,) = check_file(spec)
    assert diag.span.path == str(spec) and diag.span.line == 3 and words in diag.message


def test_without_pyarrow_a_table_source_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    source = ir.Source(kind="parquet", path=write_parquet(tmp_path / "pq", TEXTS), field="text")
    with pytest.raises(DiagnosticError) as excinfo:
        stream(source)
    (diag,) = excinfo.value.diagnostics
    assert "pip install 'expc[parquet]'" in diag.help


@pytest.mark.parametrize("limit", [None, 6])  # several windows; exactly one
def test_the_previewed_first_window_is_not_tokenised_again(tmp_path, limit):
    """The run reads the first window for the report's preview, then its batches: the same
    batches as a fresh stream, with the first window tokenised once."""
    source = jsonl_source(tmp_path)
    fresh = rows(stream(source, limit=limit).batches())
    previewed = stream(source, limit=limit)
    starts = []
    read = previewed.read
    previewed.read = lambda **kw: (starts.append(kw["start"]), read(**kw))[1]
    previewed.first_window()
    assert rows(previewed.batches()) == fresh
    assert starts.count(0) == 1
