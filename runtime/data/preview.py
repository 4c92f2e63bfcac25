"""The data as text, for the report: the first samples' token ids and the text of every id.

The report reads only the run folder, never the checkpoint's tokenizer or the data file, so
what it needs to show tokens as text is recorded in the manifest at run time, as
`data.preview` (docs/run-folder.md): the first `PREVIEW_SAMPLES` samples of the first window (their index, data
line, decoded text and up to `PREVIEW_TOKENS` token ids) and `pieces`, the text of each id
that occurs in the first window (at most `MAX_PIECES` ids, first seen first) or of the whole
vocabulary when it is small (the built-in byte tokenizer), special tokens by their name.
"""

from __future__ import annotations

from expc.models.tokenizer import BYTE_BOS, BYTE_EOS, BYTE_PAD, ByteTokenizer, HFTokenizer
from expc.runtime.data.load import TokenizedData

PREVIEW_SAMPLES = 16
PREVIEW_TOKENS = 128
MAX_PIECES = 4096
SMALL_VOCAB = 512  # at most this many ids: every id's text is recorded
BYTE_SPECIALS = {BYTE_PAD: "<pad>", BYTE_BOS: "<bos>", BYTE_EOS: "<eos>"}


def piece(tokenizer: ByteTokenizer | HFTokenizer, token_id: int) -> str:
    """The text of one token id, special tokens included (`[CLS]`, `<bos>`)."""
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.backend.decode([token_id], skip_special_tokens=False)
    if token_id in BYTE_SPECIALS:
        return BYTE_SPECIALS[token_id]
    return bytes([token_id]).decode("utf-8", errors="replace")


def _ids_to_name(tokenizer, data: TokenizedData) -> list[int]:
    if tokenizer.vocab_size <= SMALL_VOCAB:
        return list(range(tokenizer.vocab_size))
    return list(dict.fromkeys(data.token_ids.tolist()))[:MAX_PIECES]  # first seen first


def data_preview(tokenizer: ByteTokenizer | HFTokenizer | None,
                 data: TokenizedData) -> dict | None:
    """The manifest's `data.preview`; None for pre-tokenised data (no tokenizer)."""
    if tokenizer is None:
        return None
    samples = []
    for index in range(min(PREVIEW_SAMPLES, data.n_samples)):
        ids = data.sample(index)[0].tolist()
        samples.append({"index": index, "line": data.locate(index)[1],
                        "text": tokenizer.decode(ids), "ids": ids[:PREVIEW_TOKENS]})
    pieces = {str(i): piece(tokenizer, i) for i in _ids_to_name(tokenizer, data)}
    return {"samples": samples, "pieces": pieces}
