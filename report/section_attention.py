"""The attention section: the captured attention patterns, one map at a time.

A `full` pattern is stored `[N, A, S_q, S_k]` with a `[N, S]` mask (docs/run-folder.md); a
reduced pattern — `mean`/`sum`/`max` over queries `[N, A, S_k]`, or `dataset_mean`
`[A, S_k]` — is the attention each key position receives. Averaging patterns over samples
blurs prompts of different lengths and contents together, so each map is one sample's
(the first MAX_SAMPLES), cropped to its real tokens and labelled with them
(`report/tokens.py`), shown by the viewer of `report/attention_viewer.py` with selectors for
the layer, the attention head and the sample, and a colorbar.
"""

from __future__ import annotations

import torch

from expc.report.attention_viewer import AttentionMap, AttentionPlace, viewer_html
from expc.report.capture_slices import masked_slices
from expc.report.capture_stats import capture_site
from expc.report.html_parts import Section, esc
from expc.report.keys import forward_position
from expc.report.run_folder import RunFolder
from expc.report.tokens import TokenText
from expc.spec.run_format import parse_key

MAX_SAMPLES = 8
MAX_TOKENS = 48
MAX_HEADS = 8


def _place(key: str) -> str:
    info = parse_key(key)
    return ("" if info.head is None else f"head {info.head} ") + f"layer {info.layer}"


def _patterns(folder: RunFolder) -> list[str]:
    keys = []
    for key in folder.keys:
        info = parse_key(key)
        if (info.kind == "capture" and info.suffix is None
                and capture_site(folder, info) == "attn_pattern"):
            keys.append(key)
    return sorted(keys, key=lambda k: (forward_position(parse_key(k)), k))


def _first_samples(folder: RunFolder, key: str
                   ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """`(value, mask row or None)` of the first MAX_SAMPLES samples of `key`."""
    rows = []
    for value, mask in masked_slices(folder, key):
        for i in range(value.shape[0]):
            rows.append((value[i], None if mask is None else mask[i]))
            if len(rows) == MAX_SAMPLES:
                return rows
    return rows


def _sample_label(index: int, tokens: TokenText) -> str:
    sample = tokens.samples.get(index)
    if sample is None:
        return f"sample {index}"
    text = sample.text if len(sample.text) <= 40 else sample.text[:39] + "…"
    return f"sample {index}: {text}"


def _length(value: torch.Tensor, mask: torch.Tensor | None) -> int:
    real = value.shape[-1] if mask is None else int(mask.sum())
    return max(1, min(MAX_TOKENS, real))


def _place_maps(folder: RunFolder, key: str, tokens: TokenText) -> AttentionPlace | None:
    """One captured pattern as viewer maps: a `full` pattern `[N, A, S, S]` per sample
    (query x key per attention head), a reduced `[N, A, S_k]` per sample (head x key), a
    `dataset_mean` `[A, S_k]` once for the whole run; cropped to each sample's real
    tokens (at most MAX_TOKENS) and MAX_HEADS attention heads."""
    shape = folder.layout[key][0]
    if len(shape) == 2:
        weights = folder.tensor(key).double()[:MAX_HEADS]
        length = min(MAX_TOKENS, weights.shape[-1])
        labels = [str(p) for p in range(length)]
        return AttentionPlace(place=_place(key), full=False, maps=[AttentionMap(
            sample="whole run (mean over tokens; positions)", tokens=labels,
            weights=weights[:, :length])])
    if len(shape) not in (3, 4) or shape[0] == 0:
        return None
    maps = []
    for index, (value, mask) in enumerate(_first_samples(folder, key)):
        length = _length(value, mask)
        crop = (value[:MAX_HEADS, :length, :length] if len(shape) == 4
                else value[:MAX_HEADS, :length])
        maps.append(AttentionMap(sample=_sample_label(index, tokens),
                                 tokens=tokens.labels(index, length), weights=crop.double()))
    return AttentionPlace(place=_place(key), full=len(shape) == 4, maps=maps)


def attention_section(folder: RunFolder) -> Section | None:
    """Every captured attention pattern in one viewer; None if none was captured."""
    tokens = TokenText.from_manifest(folder.manifest)
    places = [p for p in (_place_maps(folder, key, tokens) for key in _patterns(folder)) if p]
    places = [p for p in places if p.maps]
    if not places:
        return None
    note = ("Token labels are the tokens the run recorded (docs/run-folder.md, data.preview)."
            if tokens.known else "This run recorded no token text: positions are shown.")
    intro = (f"<p>One attention map at a time: choose the layer, the attention head and the "
             f"sample (the first {MAX_SAMPLES}, each cropped to its real tokens, at most "
             f"{MAX_TOKENS}; at most {MAX_HEADS} attention heads). A full pattern is drawn "
             "query x key; a pattern reduced over queries (mean/sum/max) as the weight each "
             "key receives, per attention head. Each map's colorbar runs from 0 to its "
             f"largest weight; hover a cell for its value. {esc(note)}</p>")
    return Section(anchor="attention", title="Attention patterns",
                   body=intro + viewer_html(places))
