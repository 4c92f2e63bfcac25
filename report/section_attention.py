"""The attention section: the captured attention patterns, per layer (and Hydra head).

A `full` pattern is stored `[N, A, S_q, S_k]` with a `[N, S]` mask (contracts §3,
docs/run-folder.md), and is drawn as
small multiples, one row per captured layer and one column per attention head, each a
query x key map averaged over samples where both positions are real tokens (so padding does
not dilute it). A reduced pattern — `mean`/`sum`/`max` over queries `[N, A, S_k]`, or
`dataset_mean` `[A, S_k]` — is the attention each key position receives; it is drawn as a
heads x key-position map per layer. Large runs are capped (rows, heads) with a note.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from expc.report.capture_slices import masked_slices
from expc.report.capture_stats import capture_site
from expc.report.figures import new_figure, to_svg
from expc.report.html_parts import Section, figure
from expc.report.keys import forward_position
from expc.report.run_folder import RunFolder
from expc.spec.run_format import parse_key

MAX_ROWS = 12
MAX_HEADS = 8


def mean_pattern(chunks: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
    """`[A, S, S]` (query x key per head): the mean over samples of a `full` pattern given
    as slices of samples `([n, A, S_q, S_k], [n, S] mask or None)`, each position pair over
    the samples where both are real tokens, cropped to the longest sample."""
    total = counts = None
    length = 0
    for pattern, mask in chunks:
        pattern = pattern.double()  # [n, A, S_q, S_k]
        valid = (torch.ones(pattern.shape[0], pattern.shape[2], dtype=torch.float64)
                 if mask is None else mask.double())  # [n, S]
        pair = valid[:, None, :, None] * valid[:, None, None, :]  # [n, 1, S, S]
        chunk_total, chunk_counts = (pattern * pair).sum(dim=0), pair.sum(dim=0)
        total = chunk_total if total is None else total + chunk_total  # [A, S, S]
        counts = chunk_counts if counts is None else counts + chunk_counts  # [1, S, S]
        length = max(length, int(valid.sum(dim=1).max()))
    mean = total / counts.clamp_min(1.0)  # [A, S, S]
    return mean[:, :length, :length]


def key_profile(pattern: torch.Tensor) -> torch.Tensor:
    """`[A, S_k]`: a reduced pattern (`[N, A, S_k]` per sample, or `[A, S_k]`) over samples."""
    pattern = pattern.double()
    return pattern.mean(dim=0) if pattern.dim() == 3 else pattern


def _place(key: str) -> str:
    info = parse_key(key)
    return f"L{info.layer}" + ("" if info.head is None else f" h{info.head}")


def _patterns(folder: RunFolder) -> list[str]:
    keys = []
    for key in folder.keys:
        info = parse_key(key)
        if (info.kind == "capture" and info.suffix is None
                and capture_site(folder, info) == "attn_pattern"):
            keys.append(key)
    return sorted(keys, key=lambda k: (forward_position(parse_key(k)), k))


def _full_svg(maps: list[tuple[str, torch.Tensor]]) -> str:
    heads = min(MAX_HEADS, max(m.shape[0] for _, m in maps))
    rows = len(maps)
    fig = new_figure(1.3 * heads + 0.45, 1.3 * rows + 0.3, rows=rows, columns=heads,
                     left=0.45, right=0.1, bottom=0.1, top=0.3, gap_x=0.1, gap_y=0.1)
    grid = fig.subplots(rows, heads, squeeze=False)
    for row, (place, mean) in enumerate(maps):
        for col in range(heads):
            ax = grid[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if col < mean.shape[0]:
                ax.imshow(mean[col].numpy(), cmap="magma", vmin=0.0, vmax=1.0,
                          interpolation="nearest")
            else:
                ax.set_axis_off()
            if row == 0:
                ax.set_title(f"attn head {col}", fontsize=9)
            if col == 0:
                ax.set_ylabel(place, fontsize=10)
    return to_svg(fig)


def _profiles_svg(profiles: list[tuple[str, torch.Tensor]]) -> str:
    rows = len(profiles)
    fig = new_figure(7.5, 1.3 * rows + 0.6, rows=rows, left=0.8, bottom=0.5, top=0.2,
                     gap_y=0.25)
    grid = fig.subplots(rows, 1, squeeze=False)
    for row, (place, profile) in enumerate(profiles):
        ax = grid[row][0]
        ax.grid(False)
        image = ax.imshow(profile[:MAX_HEADS].numpy(), cmap="magma", aspect="auto",
                          interpolation="nearest")
        ax.set_ylabel(f"{place}\nhead", fontsize=10)
        fig.colorbar(image, ax=ax, pad=0.01)
        if row == rows - 1:
            ax.set_xlabel("key position")
        else:
            ax.set_xticks([])
    return to_svg(fig)


def attention_section(folder: RunFolder) -> Section | None:
    """Every captured attention pattern; None if none was captured."""
    full, profiles = [], []
    for key in _patterns(folder):
        dims = len(folder.layout[key][0])
        if dims == 4 and folder.layout[key][0][0] > 0:
            full.append((_place(key), mean_pattern(masked_slices(folder, key))))
        elif dims in (2, 3):
            profiles.append((_place(key), key_profile(folder.tensor(key))))
    parts = []
    capped = any(m.shape[0] > MAX_HEADS for _, m in full + profiles)
    note = f" Capped at {MAX_ROWS} layers x {MAX_HEADS} heads." if (
        capped or len(full) > MAX_ROWS or len(profiles) > MAX_ROWS) else ""
    if full:
        parts.append(figure(_full_svg(full[:MAX_ROWS]),
                            "Attention weights per head (query down, key across), mean over "
                            "samples." + note))
    if profiles:
        parts.append(figure(_profiles_svg(profiles[:MAX_ROWS]),
                            "Attention each key position receives (reduced over queries), "
                            "per head, mean over samples." + note))
    if not parts:
        return None
    return Section(anchor="attention", title="Attention patterns", body="".join(parts))
