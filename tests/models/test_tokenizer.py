"""Our tokenizers against Hugging Face's on tokenizers built and saved here, and the bytes one."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from expc.models.tokenizer import load_tokenizer
from expc.spec.diagnostics import DiagnosticError

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Activation experiments on transformer models, declared in a small language.",
    "Hydra heads share a trunk; each head owns a copy of the late layers.",
    "Ünïcödé text, emoji 🙂 and numbers 12345 survive a round trip.",
]
TEXTS = CORPUS + ["unseen words: zyzzyva quixotic", "", "  leading and trailing spaces  ",
                  "a special token <|endoftext|> inside the text"]


def bert_style(folder: Path) -> Path:
    """A WordPiece tokenizer with `[CLS] ... [SEP]`, saved the way transformers saves one."""
    backend = Backend(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200,
                                                                  special_tokens=specials))
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    backend.decoder = decoders.WordPiece()
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]")
    hf.save_pretrained(folder)
    return folder


def llama_style(folder: Path) -> Path:
    """A byte-level BPE tokenizer that adds a leading bos and has no pad token."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos)])
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>",
                                              eos_token="</s>")
    hf.save_pretrained(folder)
    (folder / "config.json").write_text('{"eos_token_id": 1}')
    return folder


def qwen_style(folder: Path) -> Path:
    """Byte-level BPE adding no special tokens, with `<|endoftext|>` as its pad token."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=350, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=backend,
                                              pad_token="<|endoftext|>", eos_token="<|endoftext|>")
    hf.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("build", [bert_style, llama_style, qwen_style])
def test_encode_decode_match_transformers(tmp_path: Path, build) -> None:
    folder = build(tmp_path / build.__name__)
    ours, theirs = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text
    assert ours.vocab_size == len(theirs)


def test_bert_style_specials_and_pad(tmp_path: Path) -> None:
    tok = load_tokenizer(bert_style(tmp_path / "bert"))
    backend = Backend.from_file(str(tmp_path / "bert" / "tokenizer.json"))
    ids = tok.encode("the quick fox")
    assert ids[0] == backend.token_to_id("[CLS]") and ids[-1] == backend.token_to_id("[SEP]")
    assert tok.pad_token_id == backend.token_to_id("[PAD]")
    assert tok.n_special_tokens == 2


def test_qwen_style_adds_nothing_and_pads_with_its_declared_token(tmp_path: Path) -> None:
    tok = load_tokenizer(qwen_style(tmp_path / "qwen"))
    assert tok.n_special_tokens == 0
    assert tok.pad_token_id == 0  # <|endoftext|>, the only special token
    assert tok.encode("fox", max_length=1) == tok.encode("fox")[:1]


def test_llama_style_pad_falls_back_to_eos(tmp_path: Path) -> None:
    tok = load_tokenizer(llama_style(tmp_path / "llama"))
    assert tok.pad_token_id == 1  # config.json's eos: no pad token is declared
    assert tok.encode("fox")[0] == 0  # bos
    assert tok.n_special_tokens == 1


@pytest.mark.parametrize("max_length", [3, 5, 8])
def test_truncation_keeps_special_tokens_like_transformers(tmp_path: Path, max_length: int) -> None:
    folder = bert_style(tmp_path / "bert")
    ours, theirs = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    text = CORPUS[1]
    expected = theirs(text, truncation=True, max_length=max_length)["input_ids"]
    assert ours.encode(text, max_length=max_length) == expected
    assert len(expected) == max_length


def test_settings_saved_in_tokenizer_json_do_not_pad_or_truncate(tmp_path: Path) -> None:
    folder = bert_style(tmp_path / "bert")
    backend = Backend.from_file(str(folder / "tokenizer.json"))
    backend.enable_truncation(max_length=4)
    backend.enable_padding(length=64, pad_id=0, pad_token="[PAD]")
    backend.save(str(folder / "tokenizer.json"))
    ids = load_tokenizer(folder).encode(CORPUS[0])
    assert 4 < len(ids) < 64
    assert 0 not in ids


def test_builtin_bytes_decoder_and_encoder() -> None:
    llama, bert = load_tokenizer("builtin:tiny-llama"), load_tokenizer("builtin:tiny-bert")
    text = "héllo"
    raw = list(text.encode("utf-8"))
    assert llama.encode(text) == [257] + raw
    assert bert.encode(text) == [257] + raw + [258]
    assert llama.encode(text, max_length=3) == [257] + raw[:2]
    assert bert.encode(text, max_length=3) == [257, raw[0], 258]
    assert llama.decode(llama.encode(text)) == text
    assert (llama.pad_token_id, llama.vocab_size) == (256, 259)


@pytest.mark.parametrize("max_length", [1, 2])
def test_max_length_without_room_for_text_is_a_diagnostic(tmp_path: Path, max_length: int) -> None:
    folder = bert_style(tmp_path / "bert")
    for ref, source in (("builtin:tiny-bert", "builtin:tiny-bert"),
                        (folder, str(folder / "tokenizer.json"))):
        with pytest.raises(DiagnosticError) as excinfo:
            load_tokenizer(ref).encode("abc", max_length=max_length)
        (diag,) = excinfo.value.diagnostics
        assert diag.code == "tokenizer-max-length" and diag.span.path == source
        assert "at least 3" in diag.help[0]


def test_unknown_builtin_lists_known_ones() -> None:
    with pytest.raises(DiagnosticError) as excinfo:
        load_tokenizer("builtin:tiny-gpt")
    (diag,) = excinfo.value.diagnostics
    assert diag.code == "tokenizer-unknown-builtin"
    assert "builtin:tiny-llama" in diag.help[0]


def test_folder_without_tokenizer_json(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.model").write_bytes(b"sentencepiece")
    with pytest.raises(DiagnosticError) as excinfo:
        load_tokenizer(tmp_path)
    (diag,) = excinfo.value.diagnostics
    assert diag.code == "tokenizer-missing"
    assert diag.span.path == str(tmp_path)


def test_corrupt_tokenizer_json(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 7}')
    with pytest.raises(DiagnosticError) as excinfo:
        load_tokenizer(tmp_path)
    (diag,) = excinfo.value.diagnostics
    assert diag.code == "tokenizer-bad-file"
    assert diag.span.path == str(tmp_path / "tokenizer.json")
