"""Data sources, tokenisation and bucketed batching (runtime/data*.py).

Every bad input must come back as a Diagnostic naming the data file and line; batching must
visit every sample exactly once, deterministically, with data order recoverable.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from expc.runtime.data.load import TokenizedData, load_data
from expc.runtime.data.batches import (
    collate, iter_batches, plan_batches, restore_data_order,
)
from expc.runtime.data.sources import MAX_ERRORS, read_samples
from expc.spec import ir
from expc.spec.data_size import count_samples
from expc.spec.diagnostics import DiagnosticError

BOS, PAD = 1, 0


class CharTokenizer:
    """A leading bos, then one id per character; truncation keeps the bos."""

    pad_token_id = PAD

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        ids = [BOS] + [ord(c) + 2 for c in text]
        return ids if max_length is None else ids[:max_length]


def write(tmp_path, text: str | bytes, name: str = "data.jsonl") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def only_error(excinfo):
    (diag,) = excinfo.value.diagnostics
    return diag


# ---------------------------------------------------------------- reading good files


def test_jsonl_samples_keep_their_lines_and_skip_blank_lines(tmp_path):
    path = write(tmp_path, '{"text": "ab"}\n\n{"text": "c", "other": 1}\r\n   \n{"text": "de"}\n')
    data = load_data(kind="jsonl", path=path, field="text", tokenizer=CharTokenizer())
    assert data.n_samples == 3
    assert data.lines.tolist() == [1, 3, 5]
    assert data.lengths.tolist() == [3, 2, 3]
    ids, mask = data.sample(1)
    assert ids.tolist() == [BOS, ord("c") + 2]
    assert mask is None
    assert data.locate(2) == (path, 5)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.text(min_size=1).filter(str.strip), st.booleans()),
                     min_size=1, max_size=20))
def test_any_text_round_trips_through_jsonl_with_its_line(tmp_path_factory, rows):
    lines, expected = [], []
    for text, blank_before in rows:
        if blank_before:
            lines.append("")
        lines.append(json.dumps({"text": text}, ensure_ascii=False))
        expected.append((len(lines), text))
    path = tmp_path_factory.mktemp("rt") / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = [(s.line, s.text) for s in read_samples(kind="jsonl", path=path)]
    assert got == expected


def test_text_source_is_one_sample_a_line(tmp_path):
    path = write(tmp_path, "hello\nworld wide\n", name="data.txt")
    data = load_data(kind="text", path=path, tokenizer=CharTokenizer())
    assert data.n_samples == 2
    assert data.sample(1)[0].tolist() == CharTokenizer().encode("world wide")


def test_skipping_earlier_samples_counts_unicode_blank_lines_as_blank(tmp_path):
    """A line of only Unicode whitespace (no-break space, ideographic space) is blank for
    the reader, for `count_samples` and for the resume skip alike: sample k is the same."""
    path = write(tmp_path, "\ufeffa\n\u00a0\nb\nc\n\u3000\nd\n", name="data.txt")
    every = [s.text for s in read_samples(kind="text", path=path)]
    assert every == ["a", "b", "c", "d"]
    assert count_samples(ir.Source(kind="text", path=path), limit=None) == len(every)
    for start in range(len(every)):
        assert [s.text for s in read_samples(kind="text", path=path, start=start)] == every[start:]


def test_limit_stops_reading_before_later_bad_lines(tmp_path):
    path = write(tmp_path, jsonl({"text": "a"}, {"text": "b"}) + "not json\n")
    data = load_data(kind="jsonl", path=path, limit=2, tokenizer=CharTokenizer())
    assert data.n_samples == 2


def test_tokens_source_with_mask_field(tmp_path):
    path = write(tmp_path, jsonl({"ids": [5, 6, 7], "m": [0, 1, 1]}, {"ids": [9], "m": [1]}))
    data = load_data(kind="tokens", path=path, field="ids", mask_field="m")
    assert data.token_ids.tolist() == [5, 6, 7, 9]
    assert data.token_ids.dtype == torch.int32
    assert data.field_mask.tolist() == [0, 1, 1, 1]
    assert data.offsets.tolist() == [0, 3, 4]


def test_field_defaults_follow_the_language(tmp_path):
    path = write(tmp_path, jsonl({"input_ids": [4, 5]}))
    assert load_data(kind="tokens", path=path).token_ids.tolist() == [4, 5]
    path = write(tmp_path, jsonl({"text": "a"}), name="t.jsonl")
    assert load_data(kind="jsonl", path=path, tokenizer=CharTokenizer()).n_tokens == 2


def test_truncation_keeps_the_tokenizers_specials_and_cuts_masks_alongside(tmp_path):
    path = write(tmp_path, jsonl({"text": "abcdef"}))
    data = load_data(kind="jsonl", path=path, tokenizer=CharTokenizer(), max_length=3)
    assert data.sample(0)[0].tolist() == [BOS, ord("a") + 2, ord("b") + 2]
    path = write(tmp_path, jsonl({"ids": [4, 5, 6, 7], "m": [1, 0, 1, 0]}), name="t.jsonl")
    data = load_data(kind="tokens", path=path, field="ids", mask_field="m", max_length=2)
    ids, mask = data.sample(0)
    assert ids.tolist() == [4, 5] and mask.tolist() == [1, 0]


def test_jsonl_mask_field_is_checked_against_the_tokenisation(tmp_path):
    path = write(tmp_path, jsonl({"text": "ab", "m": [0, 1, 1]}, {"text": "ab", "m": [1, 1]}))
    with pytest.raises(DiagnosticError) as excinfo:
        load_data(kind="jsonl", path=path, mask_field="m", tokenizer=CharTokenizer())
    diag = only_error(excinfo)
    assert (diag.span.path, diag.span.line) == (path, 2)
    assert "2 entries" in diag.message and "3 tokens" in diag.message
    path = write(tmp_path, jsonl({"text": "ab", "m": [0, 1, 1]}), name="ok.jsonl")
    data = load_data(kind="jsonl", path=path, mask_field="m", tokenizer=CharTokenizer())
    assert data.field_mask.tolist() == [0, 1, 1]


def test_sample_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "\n" + jsonl({"text": "a"}, {"text": "b"}))
    data = load_data(kind="jsonl", path=path, tokenizer=CharTokenizer())
    diag = data.sample_error(1, "selects no token", code="aggregate-empty-row")
    assert (diag.span.path, diag.span.line) == (path, 3)
    assert "sample 1" in diag.message


# ---------------------------------------------------------------- every bad input

BAD_INPUTS = [
    # (kind, kwargs, file content, line, col, message fragment)
    ("jsonl", {}, '{"text": "a"}\n{"text": }\n', 2, 10, "malformed JSON"),
    ("jsonl", {}, '{"txt": "a"}\n', 1, 1, "field `text` is missing"),
    ("jsonl", {}, '{"text": null}\n', 1, 2, "field `text` is null"),
    ("jsonl", {}, '{"a": 1, "text": 3}\n', 1, 10, "should be a string, found a number"),
    ("jsonl", {}, '[1, 2]\n', 1, 1, "expected a JSON object, found a list"),
    ("tokens", {"field": "ids"}, '{"ids": [1, "x"]}\n', 1, 2, 'containing "x"'),
    ("tokens", {"field": "ids"}, '{"ids": [3, -1]}\n', 1, 2, "containing -1"),
    ("tokens", {"field": "ids"}, '{"ids": "1 2"}\n', 1, 2, "found a string"),
    ("tokens", {"field": "ids", "mask_field": "m"}, '{"ids": [1, 2, 3], "m": [1, 0]}\n',
     1, 20, "has 2 entries but `ids` has 3 tokens"),
    ("tokens", {"field": "ids", "mask_field": "m"}, '{"ids": [1, 2], "m": [1, 2]}\n',
     1, 17, "should be a list of 0/1, found a list containing 2"),
    ("tokens", {"field": "ids", "mask_field": "m"}, '{"ids": [1, 2]}\n', 1, 1,
     "field `m` is missing"),
    ("tokens", {"field": "ids"}, '{"ids": [1]}\n{"ids": []}\n', 2, 1, "no tokens"),
    ("tokens", {"field": "ids", "vocab_size": 10}, '{"ids": [1]}\n{"ids": [3, 10]}\n', 2, 1,
     "token id 10 is outside the vocabulary (size 10)"),
    ("tokens", {"field": "ids"}, '{"ids": [4294967296]}\n', 1, 1, "outside the vocabulary"),
    ("jsonl", {}, b'{"text": "a"}\n{"text": "\xff"}\n', 2, 11, "not valid UTF-8"),
    ("jsonl", {}, "", 1, 1, "holds no samples"),
    ("jsonl", {}, "\n  \n", 1, 1, "holds no samples"),
    ("text", {"mask_field": "m"}, "a\n", 1, 1, "cannot carry the mask field"),
    ("jsonl", {}, '{"text": "a"}\n{"text": "a \\ud800 b"}\n', 2, 2, "lone surrogate"),
    ("jsonl", {}, '{"text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n", 1, 1,
     "nested too deeply"),
]


@pytest.mark.parametrize("kind, kwargs, content, line, col, fragment", BAD_INPUTS,
                         ids=[case[-1] for case in BAD_INPUTS])
def test_bad_input_is_a_diagnostic_at_file_and_line(tmp_path, kind, kwargs, content, line, col,
                                                    fragment):
    path = write(tmp_path, content)
    with pytest.raises(DiagnosticError) as excinfo:
        load_data(kind=kind, path=path, tokenizer=CharTokenizer(), **kwargs)
    diag = only_error(excinfo)
    assert diag.span.path == path
    assert (diag.span.line, diag.span.col) == (line, col)
    assert fragment in diag.message
    assert diag.severity == "error" and diag.code.startswith("data-")


def test_missing_file_is_a_diagnostic(tmp_path):
    path = str(tmp_path / "absent.jsonl")
    with pytest.raises(DiagnosticError) as excinfo:
        load_data(kind="jsonl", path=path, tokenizer=CharTokenizer())
    diag = only_error(excinfo)
    assert diag.span.path == path and "cannot read data file" in diag.message


def test_missing_field_suggests_the_closest_name(tmp_path):
    path = write(tmp_path, '{"txt": "a"}\n')
    with pytest.raises(DiagnosticError) as excinfo:
        list(read_samples(kind="jsonl", path=path, field="text"))
    assert only_error(excinfo).help == ("did you mean `txt`?",)


def test_tokenisation_and_reading_problems_are_reported_together(tmp_path):
    path = write(tmp_path, jsonl({"ids": [1], "m": [1]}, {"ids": [], "m": []}) + "{oops\n")
    with pytest.raises(DiagnosticError) as excinfo:
        load_data(kind="tokens", path=path, field="ids", mask_field="m")
    assert [d.span.line for d in excinfo.value.diagnostics] == [2, 3]


def test_error_count_is_capped(tmp_path):
    path = write(tmp_path, jsonl(*[{"input_ids": []}] * 50))
    with pytest.raises(DiagnosticError) as excinfo:
        load_data(kind="tokens", path=path)
    assert len(excinfo.value.diagnostics) == MAX_ERRORS < 50


def test_all_bad_lines_are_reported_together(tmp_path):
    path = write(tmp_path, '{"text": 1}\n{"text": "ok"}\nnope\n{"x": "a"}\n')
    with pytest.raises(DiagnosticError) as excinfo:
        load_data(kind="jsonl", path=path, tokenizer=CharTokenizer())
    assert [d.span.line for d in excinfo.value.diagnostics] == [1, 3, 4]


# ---------------------------------------------------------------- batching


def packed(lengths: list[int]) -> TokenizedData:
    """Sample i holds the ids 100*i + 1 .. 100*i + length, so rows can be checked."""
    ids = [100 * i + 1 + t for i, n in enumerate(lengths) for t in range(n)]
    offsets = torch.cumsum(torch.tensor([0] + lengths), 0)
    return TokenizedData(path="mem.jsonl", token_ids=torch.tensor(ids, dtype=torch.int64),
                         offsets=offsets,
                         lines=torch.arange(1, len(lengths) + 1, dtype=torch.int64),
                         field_mask=torch.tensor([t % 2 for t in range(len(ids))],
                                                 dtype=torch.int8))


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=120),
       batch_size=st.integers(1, 9), bucket_batches=st.integers(1, 6))
def test_plan_visits_every_sample_once_and_is_deterministic(lengths, batch_size,
                                                            bucket_batches):
    lengths_t = torch.tensor(lengths)
    plan = plan_batches(lengths_t, batch_size=batch_size, bucket_batches=bucket_batches)
    again = plan_batches(lengths_t, batch_size=batch_size, bucket_batches=bucket_batches)
    assert torch.equal(plan.order, again.order) and torch.equal(plan.bounds, again.bounds)
    assert sorted(plan.order.tolist()) == list(range(len(lengths)))
    assert len(plan) == -(-len(lengths) // batch_size)
    sizes = [plan.batch(k).numel() for k in range(len(plan))]
    assert all(size == batch_size for size in sizes[:-1]) and 1 <= sizes[-1] <= batch_size
    window = batch_size * bucket_batches
    for start in range(0, len(lengths), window):
        members = plan.order[start:start + window]
        assert set(members.tolist()) == set(range(start, min(start + window, len(lengths))))
        window_lengths = lengths_t[members]
        assert torch.all(window_lengths[:-1] >= window_lengths[1:])
    run_order = torch.cat([plan.batch(k) for k in range(len(plan))])
    rows = torch.tensor(lengths)[run_order] * 10 + 7  # a per-sample result, in run order
    assert restore_data_order(rows, run_order).tolist() == [n * 10 + 7 for n in lengths]


def test_bucketing_cuts_padding_on_mixed_lengths():
    lengths = torch.tensor([2, 30] * 32)

    def padded_tokens(plan):
        return sum(int(lengths[plan.batch(k)].max()) * plan.batch(k).numel()
                   for k in range(len(plan)))
    flat = plan_batches(lengths, batch_size=4, bucket_batches=1)
    bucketed = plan_batches(lengths, batch_size=4, bucket_batches=8)
    assert padded_tokens(flat) == 30 * 64
    assert padded_tokens(bucketed) == 30 * 32 + 2 * 32


def test_collate_pads_right_and_masks():
    data = packed([3, 1, 2])
    batch = collate(data, torch.tensor([2, 0, 1]), pad_token_id=9, number=4)
    assert batch.number == 4 and batch.size == 3
    assert batch.sample_index.tolist() == [2, 0, 1]
    assert batch.input_ids.tolist() == [[201, 202, 9], [1, 2, 3], [101, 9, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]
    assert batch.token_count.tolist() == [2, 3, 1]
    assert batch.field_mask.tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 0]]
    for tensor in (batch.sample_index, batch.input_ids, batch.attention_mask, batch.token_count,
                   batch.field_mask):
        assert tensor.dtype == torch.int64


def test_resumed_iteration_equals_the_tail_of_a_full_one():
    data = packed([5, 1, 4, 4, 2, 7, 3, 1, 1])
    plan = plan_batches(data.lengths, batch_size=2, bucket_batches=2)
    full = list(iter_batches(data, plan, pad_token_id=PAD))
    tail = list(iter_batches(data, plan_batches(data.lengths, batch_size=2, bucket_batches=2),
                             pad_token_id=PAD, start=3))
    assert [b.number for b in tail] == [3, 4]
    for mine, theirs in zip(tail, full[3:], strict=True):
        assert torch.equal(mine.input_ids, theirs.input_ids)
        assert torch.equal(mine.sample_index, theirs.sample_index)
    assert plan.samples_before(3) == 6


def test_restore_data_order_rejects_a_non_permutation():
    with pytest.raises(ValueError):
        restore_data_order(torch.zeros(3), torch.tensor([0, 0, 1]))
