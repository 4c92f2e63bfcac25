"""Tokenised samples of a run, packed flat, window by window, with the way back from a sample
to its file and line (or row).

`tokenized_windows` streams the raw samples of a data source (`samples.source_samples`: a
line file's or a table's) through the tokenizer
and packs each window of samples into flat int tensors with offsets — token ids, optional
per-token mask field, where each sample came from — so a window of short prompts costs a few
KB, not a Python object per token, and a run holds one window at a time (`stream.py`);
`load_data` is the same with the whole source as one window. Truncation to `max_length`
happens here; padding and batching happen in `batches`. Any later error about one sample (an
all-zero mask row, say) can name its file and line through `TokenizedData.origin` /
`sample_error`. Token fields (one token per sample, what `effect logit_diff` compares) become
one id per sample here: an id as written (inside the vocabulary), or a string that the
tokenizer turns into exactly one token. Bad samples are collected within a window (up to
`MAX_ERRORS`) and raised together; a bad sample in a later window fails the run when that
window is read.
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import attrs
import torch

from expc.runtime.data.samples import sample_tokens, source_samples
from expc.runtime.data.sources import MAX_ERRORS, Origin, RawSample
from expc.spec import ir
from expc.spec.diagnostics import Diagnostic, DiagnosticError
from expc.spec.vocabulary import TABLE_SOURCES

_ID_LIMIT = 2**31  # token ids are kept as int32


class Tokenizer(Protocol):
    """What the data loader needs from a tokenizer."""

    pad_token_id: int | None

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        """Ids with the model's special tokens; at most `max_length` (specials kept)."""


@attrs.frozen(kw_only=True)
class TokenizedData:
    """Samples `first, first + 1, ...`: token ids (truncated), mask field and origin, packed."""

    path: str
    token_ids: torch.Tensor  # [T] int32, all samples back to back (int64 once batched)
    offsets: torch.Tensor  # [N + 1] int64, sample i is token_ids[offsets[i]:offsets[i+1]]
    lines: torch.Tensor  # [N] int64, 1-based line of sample i in `path` (a table: its row)
    field_mask: torch.Tensor | None = None  # [T] int8 0/1 beside token_ids, or None
    token_fields: dict[str, torch.Tensor] = attrs.field(factory=dict)  # name -> [N] int64 ids
    files: tuple[str, ...] = ()  # a table source's files; empty: every sample is in `path`
    file_index: torch.Tensor | None = None  # [N] int64, sample i's file in `files`
    first: int = 0  # the sample number of sample 0 here (a window's start)

    @property
    def n_samples(self) -> int:
        return self.lines.numel()

    @property
    def lengths(self) -> torch.Tensor:  # [N] int64
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def n_tokens(self) -> int:
        return self.token_ids.numel()

    def sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids `[L]` and mask field `[L]` (or None) of one sample (`index` local)."""
        lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
        mask = None if self.field_mask is None else self.field_mask[lo:hi]
        return self.token_ids[lo:hi], mask

    def origin(self, sample: int) -> Origin:
        """The file and line (or row) that sample number `sample` came from."""
        at = sample - self.first
        if not self.files:
            return Origin(path=self.path, line=int(self.lines[at]))
        return Origin(path=self.files[int(self.file_index[at])], row=int(self.lines[at]))

    def locate(self, sample: int) -> tuple[str, int]:
        """The data file and 1-based line number that sample number `sample` came from."""
        origin = self.origin(sample)
        return origin.path, origin.line

    def sample_error(self, sample: int, message: str, *, code: str) -> Diagnostic:
        """A diagnostic about sample number `sample`, placed at its line in the data file."""
        return self.origin(sample).error(f"sample {sample}: {message}", code=code)


def load_data(*, kind: str, path: str | Path, field: str | None = None,
              mask_field: str | None = None, split: str | None = None,
              limit: int | None = None, tokenizer: Tokenizer | None = None,
              max_length: int | None = None, max_positions: int | None = None,
              vocab_size: int | None = None, token_fields: Sequence[str] = ()
              ) -> TokenizedData:
    """Read, tokenise and truncate a whole data source; raise `DiagnosticError` for bad input.

    `tokenized_windows` with one window; see it for the arguments.
    """
    source = ir.Source(kind=kind, path=str(path), field=field, mask_field=mask_field,
                       split=split)
    windows = tokenized_windows(source, size=None, limit=limit, tokenizer=tokenizer,
                                max_length=max_length, max_positions=max_positions,
                                vocab_size=vocab_size, token_fields=token_fields)
    with contextlib.closing(windows):
        return next(windows)


def tokenized_windows(source: ir.Source, *, size: int | None, start: int = 0,
                      limit: int | None = None, tokenizer: Tokenizer | None = None,
                      max_length: int | None = None, max_positions: int | None = None,
                      vocab_size: int | None = None, token_fields: Sequence[str] = ()
                      ) -> Iterator[TokenizedData]:
    """The samples from number `start` on, tokenised `size` at a time (None: all in one).

    `tokens` sources are already token ids and need no tokenizer; their truncation keeps the
    first `max_length` ids. Texts are truncated by the tokenizer, which keeps the model's
    special tokens (a BERT `[SEP]` stays last). A mask field must have one entry per token
    of the untruncated sample (the tokenizer's tokens for texts); a sample with a mask
    field is truncated by keeping its first `max_length` tokens and mask entries. Without a
    `max_length`, the model's `max_positions` is the limit: a sample longer than the model
    can take is truncated, never fed whole (`expc check` refuses a `max_length` above it).
    With `vocab_size`, ids outside the model's vocabulary are errors at their line (they would
    otherwise fail deep inside the embedding). `token_fields` are read as one token id per
    sample (`TokenizedData.token_fields`); a string needs the tokenizer.
    """
    if source.kind != "tokens" and tokenizer is None:
        raise ValueError(f"a `{source.kind}` source needs a tokenizer")
    if max_length is None:
        max_length = max_positions
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    samples = source_samples(source, limit=limit, token_fields=token_fields, start=start)
    packer = _Packer(source=source, tokenizer=tokenizer, max_length=max_length,
                     vocab_size=vocab_size, token_fields=tuple(token_fields))
    with contextlib.closing(samples):
        first = start
        while True:
            window = packer.window(samples, size=size, first=first)
            if window is None:
                return
            yield window
            first += window.n_samples


@attrs.define(kw_only=True)
class _Packer:
    """Tokenises raw samples into one packed `TokenizedData` per window."""

    source: ir.Source
    tokenizer: Tokenizer | None
    max_length: int | None
    vocab_size: int | None
    token_fields: tuple[str, ...]
    _one_token: _OneToken | None = None

    def window(self, samples: Iterator[RawSample], *, size: int | None,
               first: int) -> TokenizedData | None:
        """The next `size` samples packed (fewer at the end; None when none are left)."""
        if self._one_token is None:
            self._one_token = _OneToken(tokenizer=self.tokenizer, vocab_size=self.vocab_size)
        ids, offsets, lines, files = array("i"), array("q", [0]), array("q"), array("q")
        masks = array("b") if self.source.mask_field is not None else None
        field_ids = {name: array("q") for name in self.token_fields}
        names: dict[str, int] = {}
        problems: list[Diagnostic] = []
        try:
            for raw in samples:
                problem, tokens, resolved = self._tokenise(raw)
                if problem is not None:
                    problems.append(problem)
                    if len(problems) >= MAX_ERRORS:
                        break
                elif not problems:
                    keep = len(tokens) if self.max_length is None else min(len(tokens),
                                                                           self.max_length)
                    ids.extend(tokens[:keep])
                    if masks is not None:
                        masks.extend(raw.mask[:keep])
                    offsets.append(len(ids))
                    lines.append(raw.origin.line if raw.origin.row is None else raw.origin.row)
                    files.append(names.setdefault(raw.origin.path, len(names)))
                    for name, token in resolved.items():
                        field_ids[name].append(token)
                if size is not None and len(lines) + len(problems) >= size:
                    break
        except DiagnosticError as exc:  # the reader's own problems, after ours of earlier lines
            problems.extend(exc.diagnostics)
        if problems:
            raise DiagnosticError(problems)
        if not lines:
            return None
        tables = self.source.kind in TABLE_SOURCES
        return TokenizedData(
            path=self.source.path,
            token_ids=_to_tensor(ids, torch.int32),
            offsets=_to_tensor(offsets, torch.int64),
            lines=_to_tensor(lines, torch.int64),
            field_mask=None if masks is None else _to_tensor(masks, torch.int8),
            token_fields={name: _to_tensor(values, torch.int64)
                          for name, values in field_ids.items()},
            files=tuple(names) if tables else (),
            file_index=_to_tensor(files, torch.int64) if tables else None,
            first=first)

    def _tokenise(self, raw: RawSample) -> tuple[Diagnostic | None, list[int], dict]:
        """(what is wrong with the sample or None, its tokens, its token fields' ids)."""
        tokens = sample_tokens(raw, self.tokenizer, self.max_length)
        problem = _check_tokens(raw, tokens, mask_field=self.source.mask_field,
                                vocab_size=self.vocab_size)
        resolved = {}
        for name, value in raw.token_fields.items():
            resolved[name], wrong = self._one_token.id_of(value)
            if problem is None and wrong is not None:
                problem = raw.origin.error(f"field `{name}` {wrong}", code="data-token-field")
        return problem, tokens, resolved


def _check_tokens(raw: RawSample, tokens: list[int], *, mask_field: str | None,
                  vocab_size: int | None) -> Diagnostic | None:
    """What is wrong with one sample's tokens, if anything."""
    if not tokens:
        return raw.origin.error("sample has no tokens after tokenisation",
                                code="data-empty-sample")
    id_limit = min(vocab_size or _ID_LIMIT, _ID_LIMIT)
    if max(tokens) >= id_limit:
        return raw.origin.error(f"token id {max(tokens)} is outside the vocabulary (size "
                                f"{id_limit})", code="data-token-id",
                                help=["pre-tokenised ids must come from the model's own "
                                      "tokenizer"])
    if raw.mask is not None and len(raw.mask) != len(tokens):
        return raw.origin.error(f"mask field `{mask_field}` has {len(raw.mask)} entries but "
                                f"the text tokenises to {len(tokens)} tokens",
                                code="data-field",
                                help=["the mask needs one 0/1 entry per token of the model's "
                                      "tokenizer"])
    return None


@attrs.define(kw_only=True)
class _OneToken:
    """A token field's value as one token id, or why it is not one.

    A string is one token when the tokenizer's ids for it are the ids of the empty text
    (its special tokens) plus one more; that one is the token, wherever the specials sit.
    """

    tokenizer: Tokenizer | None
    vocab_size: int | None
    _specials: list[int] | None = None

    def id_of(self, value: int | str) -> tuple[int, str | None]:
        """(the id, None), or (0, what is wrong with `value`)."""
        if isinstance(value, int):
            limit = min(self.vocab_size or _ID_LIMIT, _ID_LIMIT)
            if value >= limit:
                return 0, f"holds token id {value}, outside the vocabulary (size {limit})"
            return value, None
        if self.tokenizer is None:
            return 0, (f"holds the string {value!r}, and a `tokens` source has no tokenizer "
                       "to turn it into an id; give the token id")
        if self._specials is None:
            self._specials = self.tokenizer.encode("")
        ids = self.tokenizer.encode(value)
        at = next((i for i, (a, b) in enumerate(zip(ids, self._specials)) if a != b),
                  len(self._specials))
        if len(ids) != len(self._specials) + 1 or ids[:at] + ids[at + 1:] != self._specials:
            count = len(ids) - len(self._specials)
            return 0, (f"holds {value!r}, which the tokenizer turns into {count} tokens, not "
                       "one; give a string of one token or its token id")
        return ids[at], None


def _to_tensor(values: array, dtype: torch.dtype) -> torch.Tensor:
    """A tensor over a (non-empty) stdlib array's memory, no copy; it keeps the array alive."""
    return torch.frombuffer(values, dtype=dtype)
