"""Text -> token ids for a model reference: a checkpoint's `tokenizer.json`, or bytes.

A checkpoint folder is tokenized exactly as Hugging Face's fast tokenizer does it, through
the `tokenizers` library and the post-processor saved in `tokenizer.json` (BERT's
`[CLS] ... [SEP]`, Llama's leading bos, none for Qwen2); truncation and padding settings
saved in the file are ignored, because the experiment's `max_length` and the runtime's
batching decide those. Built-in models (`builtin:NAME`) read bytes: ids 0..255 are the
UTF-8 bytes, then pad, bos, eos (`spec/builtin_models.py`); decoders get a leading bos,
encoders bos ... eos (their `[CLS] ... [SEP]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import attrs
import tokenizers

from expc.spec.builtin_models import BUILTIN_CONFIGS, BYTE_VOCAB
from expc.spec.diagnostics import fail
from expc.spec.config_fields import ConfigFields
from expc.spec.json_files import read_json_object
from expc.spec.vocabulary import BUILTIN_PREFIX

TOKENIZER_FILE = "tokenizer.json"
BYTE_PAD, BYTE_BOS, BYTE_EOS = 256, 257, 258
ENCODER_MODEL_TYPES = ("bert",)


class Tokenizer(Protocol):
    """What the runtime needs from a tokenizer."""

    pad_token_id: int
    vocab_size: int
    n_special_tokens: int  # added to every text; `max_length` must exceed it

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        """Ids with the model's special tokens; at most `max_length` of them (specials kept)."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens left out."""


def _room_for_text(max_length: int | None, n_special: int, source: str) -> int | None:
    """How many text tokens fit in `max_length` beside the special tokens."""
    if max_length is None:
        return None
    if max_length <= n_special:
        raise fail(
            source, f"max_length = {max_length} leaves no room for text beside the "
            f"{n_special} special tokens this tokenizer adds", code="tokenizer-max-length",
            help=(f"set data.max_length to at least {n_special + 1}",))
    return max_length - n_special


@attrs.frozen(kw_only=True)
class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; pad 256, bos 257, eos 258."""

    source: str  # the `builtin:NAME` reference, for diagnostics
    add_bos: bool = True
    add_eos: bool = False
    pad_token_id: int = BYTE_PAD
    vocab_size: int = BYTE_VOCAB

    @property
    def n_special_tokens(self) -> int:
        return int(self.add_bos) + int(self.add_eos)

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        room = _room_for_text(max_length, self.n_special_tokens, self.source)
        ids = list(text.encode("utf-8"))[:room]
        return [BYTE_BOS] * self.add_bos + ids + [BYTE_EOS] * self.add_eos

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


@attrs.frozen(kw_only=True)
class HFTokenizer:
    """A `tokenizer.json` pipeline, with the special tokens its post-processor adds."""

    backend: tokenizers.Tokenizer
    source: str  # the tokenizer.json path, for diagnostics
    pad_token_id: int
    vocab_size: int

    @property
    def n_special_tokens(self) -> int:
        return self.backend.num_special_tokens_to_add(is_pair=False)

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        encoding = self.backend.encode(text, add_special_tokens=False)
        room = _room_for_text(max_length, self.n_special_tokens, self.source)
        if room is not None:
            encoding.truncate(room)
        return self.backend.post_process(encoding).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)


def _read_optional_json(path: Path) -> dict:
    """A tokenizer side file's object; `{}` when the checkpoint has no such file."""
    if not path.is_file():
        return {}
    return read_json_object(path, what=path.name, code="tokenizer-bad-json")


def _token_text(value: object) -> str | None:
    """A special token as saved by transformers: a string or `{"content": ...}`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _pad_token_id(folder: Path, backend: tokenizers.Tokenizer) -> int:
    """The pad id the checkpoint declares; else eos; else 0 (padding is always masked)."""
    names = [_read_optional_json(folder / name).get("pad_token")
             for name in ("tokenizer_config.json", "special_tokens_map.json")]
    for name in map(_token_text, names):
        if name is not None and backend.token_to_id(name) is not None:
            return backend.token_to_id(name)
    path = folder / "config.json"
    fields = ConfigFields(raw=_read_optional_json(path), source=str(path))
    vocab_size = fields.integer("vocab_size", default=backend.get_vocab_size())
    pad = fields.token_id("pad_token_id", vocab_size=vocab_size)  # a bad one is an error
    if pad is not None:
        return pad
    eos = fields.token_id("eos_token_id")  # a bad one is merely not used for padding
    return eos if eos is not None and eos < vocab_size else 0


def _load_folder(folder: Path) -> HFTokenizer:
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise fail(
            folder, f"`{folder}` has no {TOKENIZER_FILE}", code="tokenizer-missing",
            help=("expc reads Hugging Face fast tokenizers; saving the tokenizer with "
                  "transformers (`AutoTokenizer...save_pretrained`) writes tokenizer.json",))
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises a bare Exception for a bad file
        raise fail(path, f"cannot read {TOKENIZER_FILE}: {exc}",
                   code="tokenizer-bad-file") from None
    backend.no_truncation()
    backend.no_padding()
    return HFTokenizer(backend=backend, source=str(path),
                       pad_token_id=_pad_token_id(folder, backend),
                       vocab_size=backend.get_vocab_size(with_added_tokens=True))


def _load_builtin(ref: str) -> ByteTokenizer:
    name = ref[len(BUILTIN_PREFIX):]
    config = BUILTIN_CONFIGS.get(name)
    if config is None:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_CONFIGS)
        raise fail(ref, f"unknown built-in model `{ref}`",
                   code="tokenizer-unknown-builtin", help=(f"known: {known}",))
    is_encoder = config["model_type"] in ENCODER_MODEL_TYPES
    return ByteTokenizer(source=ref, add_bos=True, add_eos=is_encoder)


def load_tokenizer(ref: str | Path) -> Tokenizer:
    """The tokenizer for `builtin:NAME` or a checkpoint folder holding tokenizer.json."""
    if isinstance(ref, str) and ref.startswith(BUILTIN_PREFIX):
        return _load_builtin(ref)
    return _load_folder(Path(ref))
