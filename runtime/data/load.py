"""Tokenised samples of a run, packed flat, with the way back from a sample to its file line.

`load_data` streams the raw samples of a data file (`sources.read_samples`) through the
tokenizer and keeps only token ids, optional per-token mask field and line numbers, packed in
flat int tensors with offsets: ~1e5 short prompts cost a few MB, not a Python object per token.
Truncation to `max_length` happens here; padding and batching happen in `batches`.
Any later error about one sample (an all-zero mask row, say) can name the file and line
through `TokenizedData.locate` / `sample_error`. Token fields (one token per sample, what
`effect logit_diff` compares) become one id per sample here: an id as written (inside the
vocabulary), or a string that the tokenizer turns into exactly one token.
"""

from __future__ import annotations

from array import array
from pathlib import Path
from collections.abc import Sequence
from typing import Protocol

import attrs
import torch

from expc.runtime.data.sources import MAX_ERRORS, RawSample, read_samples
from expc.spec.diagnostics import Diagnostic, DiagnosticError, error

_ID_LIMIT = 2**31  # token ids are kept as int32


class Tokenizer(Protocol):
    """What the data loader needs from a tokenizer."""

    pad_token_id: int | None

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        """Ids with the model's special tokens; at most `max_length` (specials kept)."""


@attrs.frozen(kw_only=True)
class TokenizedData:
    """Every sample's token ids (truncated), mask field and source line, packed flat."""

    path: str
    token_ids: torch.Tensor  # [T] int32, all samples back to back (int64 once batched)
    offsets: torch.Tensor  # [N + 1] int64, sample i is token_ids[offsets[i]:offsets[i+1]]
    lines: torch.Tensor  # [N] int64, 1-based line of sample i in `path`
    field_mask: torch.Tensor | None = None  # [T] int8 0/1 beside token_ids, or None
    token_fields: dict[str, torch.Tensor] = attrs.field(factory=dict)  # name -> [N] int64 ids

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
        """Token ids `[L]` and mask field `[L]` (or None) of one sample."""
        lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
        mask = None if self.field_mask is None else self.field_mask[lo:hi]
        return self.token_ids[lo:hi], mask

    def locate(self, index: int) -> tuple[str, int]:
        """The data file and 1-based line number that sample `index` came from."""
        return self.path, int(self.lines[index])

    def sample_error(self, index: int, message: str, *, code: str) -> Diagnostic:
        """A diagnostic about sample `index`, placed at its line in the data file."""
        path, line = self.locate(index)
        return error(path, f"sample {index}: {message}", code=code, line=line)


def load_data(*, kind: str, path: str | Path, field: str | None = None,
              mask_field: str | None = None, limit: int | None = None,
              tokenizer: Tokenizer | None = None, max_length: int | None = None,
              max_positions: int | None = None, vocab_size: int | None = None,
              token_fields: Sequence[str] = ()) -> TokenizedData:
    """Read, tokenise and truncate a data source; raise `DiagnosticError` for bad input.

    `tokens` sources are already token ids and need no tokenizer; their truncation keeps the
    first `max_length` ids. Texts are truncated by the tokenizer, which keeps the model's
    special tokens (a BERT `[SEP]` stays last). A mask field must have one entry per token
    of the untruncated sample (the tokenizer's tokens for `jsonl`); a sample with a mask
    field is truncated by keeping its first `max_length` tokens and mask entries. Without a
    `max_length`, the model's `max_positions` is the limit: a sample longer than the model
    can take is truncated, never fed whole (`expc check` refuses a `max_length` above it).
    With `vocab_size`, ids outside the model's vocabulary are errors at their line (they would
    otherwise fail deep inside the embedding). `token_fields` are read as one token id per
    sample (`TokenizedData.token_fields`); a string needs the tokenizer.
    """
    if kind != "tokens" and tokenizer is None:
        raise ValueError(f"a `{kind}` source needs a tokenizer")
    if max_length is None:
        max_length = max_positions
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    path = str(path)
    ids, offsets, lines = array("i"), array("q", [0]), array("q")
    masks = array("b") if mask_field is not None else None
    field_ids = {name: array("q") for name in token_fields}
    one_token = _OneToken(tokenizer=tokenizer, vocab_size=vocab_size)
    problems: list[Diagnostic] = []
    samples = read_samples(kind=kind, path=path, field=field, mask_field=mask_field, limit=limit,
                           token_fields=tuple(token_fields))
    try:
        for raw in samples:
            if raw.token_ids is not None:
                tokens = raw.token_ids
            elif raw.mask is not None:
                tokens = tokenizer.encode(raw.text)
            else:
                tokens = tokenizer.encode(raw.text, max_length=max_length)
            problem = _check_tokens(raw, tokens, path=path, mask_field=mask_field,
                                    vocab_size=vocab_size)
            resolved = {}
            for name, value in raw.token_fields.items():
                resolved[name], wrong = one_token.id_of(value)
                if problem is None and wrong is not None:
                    problem = error(path, f"field `{name}` {wrong}", code="data-token-field",
                                    line=raw.line)
            if problem is not None:
                problems.append(problem)
                if len(problems) >= MAX_ERRORS:
                    break
                continue
            keep = len(tokens) if max_length is None else min(len(tokens), max_length)
            ids.extend(tokens[:keep])
            if masks is not None:
                masks.extend(raw.mask[:keep])
            offsets.append(len(ids))
            lines.append(raw.line)
            for name, token in resolved.items():
                field_ids[name].append(token)
    except DiagnosticError as exc:  # the reader's own problems, after ours of earlier lines
        problems.extend(exc.diagnostics)
    finally:
        samples.close()
    if problems:
        raise DiagnosticError(problems)
    return TokenizedData(
        path=path,
        token_ids=_to_tensor(ids, torch.int32),
        offsets=_to_tensor(offsets, torch.int64),
        lines=_to_tensor(lines, torch.int64),
        field_mask=None if masks is None else _to_tensor(masks, torch.int8),
        token_fields={name: _to_tensor(values, torch.int64)
                      for name, values in field_ids.items()},
    )


def _check_tokens(raw: RawSample, tokens: list[int], *, path: str, mask_field: str | None,
                  vocab_size: int | None) -> Diagnostic | None:
    """What is wrong with one sample's tokens, if anything."""
    if not tokens:
        return error(path, "sample has no tokens after tokenisation", code="data-empty-sample",
                     line=raw.line)
    id_limit = min(vocab_size or _ID_LIMIT, _ID_LIMIT)
    if max(tokens) >= id_limit:
        return error(path, f"token id {max(tokens)} is outside the vocabulary (size {id_limit})",
                     code="data-token-id", line=raw.line,
                     help=["pre-tokenised ids must come from the model's own tokenizer"])
    if raw.mask is not None and len(raw.mask) != len(tokens):
        return error(path, f"mask field `{mask_field}` has {len(raw.mask)} entries but the text "
                           f"tokenises to {len(tokens)} tokens", code="data-field",
                     line=raw.line,
                     help=["the mask needs one 0/1 entry per token of the model's tokenizer"])
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
