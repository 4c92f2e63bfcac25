"""Token fields (`logit_diff`'s `correct`/`wrong`): one token id per sample, or a diagnostic
at the data line (and column) that says why not."""

import json

import pytest
import torch

from expc.models.tokenizer import load_tokenizer
from expc.runtime.data.load import load_data
from expc.spec.diagnostics import DiagnosticError

BYTES = load_tokenizer("builtin:tiny-llama")  # UTF-8 bytes, a BOS before every text


def load(tmp_path, rows, *, kind="jsonl", tokenizer=BYTES):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_data(kind=kind, path=path, tokenizer=tokenizer, vocab_size=300,
                     token_fields=("good", "bad"))


def test_ids_and_one_token_strings_become_ids(tmp_path):
    data = load(tmp_path, [{"text": "hi", "good": "a", "bad": 7},
                           {"text": "yo", "good": 120, "bad": "Z"}])
    assert data.token_fields["good"].tolist() == [97, 120]
    assert data.token_fields["bad"].tolist() == [7, 90]
    assert data.token_fields["good"].dtype == torch.int64


@pytest.mark.parametrize("value, words", [
    ("ab", "turns into 2 tokens, not one"),
    ("", "turns into 0 tokens, not one"),
    (300, "outside the vocabulary (size 300)"),
])
def test_a_value_that_is_not_one_token_names_its_line(tmp_path, value, words):
    with pytest.raises(DiagnosticError) as caught:
        load(tmp_path, [{"text": "hi", "good": 1, "bad": 2},
                        {"text": "hi", "good": value, "bad": 2}])
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.span.line == 2 and "field `good`" in diagnostic.message
    assert words in diagnostic.message


@pytest.mark.parametrize("value, words", [([1], "found a list"), (-1, "found -1"),
                                          (True, "found a boolean")])
def test_a_value_of_the_wrong_type_names_its_column(tmp_path, value, words):
    with pytest.raises(DiagnosticError) as caught:
        load(tmp_path, [{"text": "hi", "good": value, "bad": 2}])
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.span.line == 1 and words in diagnostic.message
    assert diagnostic.span.col == len('{"text": "hi", ') + 1


def test_a_missing_field_and_a_tokens_source_string_are_diagnostics(tmp_path):
    with pytest.raises(DiagnosticError) as caught:
        load(tmp_path, [{"text": "hi", "good": 1}])
    assert "field `bad` is missing" in caught.value.diagnostics[0].message
    with pytest.raises(DiagnosticError) as caught:
        load(tmp_path, [{"input_ids": [1, 2], "good": "a", "bad": 2}], kind="tokens",
             tokenizer=None)
    assert "has no tokenizer" in caught.value.diagnostics[0].message


def test_a_text_source_has_no_token_fields(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    with pytest.raises(DiagnosticError) as caught:
        load_data(kind="text", path=path, tokenizer=BYTES, token_fields=("good",))
    assert "cannot carry the token field `good`" in caught.value.diagnostics[0].message
