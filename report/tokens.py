"""Token ids as text, from the run folder alone: the manifest's `data.preview`.

`expc run` records the first samples' token ids and text and the text of every token id in
the data (docs/run-folder.md, `data.preview`); this is all the report knows of the
tokenizer. Ids it cannot name are shown as `#id`; a run folder without a preview (older expc,
pre-tokenised data) shows ids and positions only. Whitespace is made visible (`␣`, `↵`,
`⇥`) so a token of one space is not an empty cell.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

import attrs

VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥"})


def shown(piece: str) -> str:
    """A token's text with its whitespace visible and other control characters escaped
    (`\\x08`), so no token is an empty or invisible cell."""
    if not piece:
        return "∅"
    return "".join(c if unicodedata.category(c)[0] != "C" else f"\\x{ord(c):02x}"
                   for c in piece.translate(VISIBLE))


@attrs.frozen(kw_only=True)
class PreviewSample:
    """One of the first samples of the run, as recorded at run time."""

    index: int
    line: int | None
    text: str
    ids: tuple[int, ...]


@attrs.frozen(kw_only=True)
class TokenText:
    """What the run folder records of its tokens: the first samples and each id's text."""

    samples: Mapping[int, PreviewSample]  # by sample index
    pieces: Mapping[int, str]

    @classmethod
    def from_manifest(cls, manifest: Mapping) -> TokenText:
        preview = (manifest.get("data") or {}).get("preview") or {}
        samples = {}
        for raw in preview.get("samples") or ():
            sample = PreviewSample(index=int(raw["index"]), line=raw.get("line"),
                                   text=str(raw.get("text", "")),
                                   ids=tuple(int(i) for i in raw.get("ids", ())))
            samples[sample.index] = sample
        pieces = {int(k): str(v) for k, v in (preview.get("pieces") or {}).items()}
        return cls(samples=samples, pieces=pieces)

    @property
    def known(self) -> bool:
        """True when the run recorded any token text."""
        return bool(self.pieces)

    def token(self, token_id: int) -> str:
        """The id's text with whitespace visible, or `#id` when the run did not record it."""
        piece = self.pieces.get(int(token_id))
        return f"#{token_id}" if piece is None else shown(piece)

    def labels(self, index: int, length: int) -> list[str]:
        """Axis labels for the first `length` positions of sample `index`: its tokens where
        recorded, else the positions."""
        sample = self.samples.get(index)
        ids = sample.ids if sample is not None else ()
        return [self.token(ids[p]) if p < len(ids) and self.known else str(p)
                for p in range(length)]
