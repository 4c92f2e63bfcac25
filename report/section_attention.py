"""The attention section: small multiples of the captured attention patterns, one row per
captured layer (and Hydra head), one column per attention head.

A `full` pattern `[N, A, S, S]` is averaged over samples, each query/key position over the
samples where both are real tokens (per the capture's mask), so padding does not dilute it.
Large runs are capped (rows, columns) with a note, to keep the page small and quick.
"""

from __future__ import annotations

import torch

from expc.report.figures import new_figure, to_svg
from expc.report.html_parts import Section, figure
from expc.report.keys import forward_position, parse_key
from expc.report.run_folder import RunFolder

MAX_ROWS = 12
MAX_HEADS = 8


def mean_pattern(pattern: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """`[A, S, S]` mean over samples of a `[N, A, S, S]` pattern (masked), or the pattern
    itself if already `[A, S, S]`; None for other shapes. Cropped to real positions."""
    pattern = pattern.double()
    if pattern.dim() == 3:
        return pattern
    if pattern.dim() != 4:
        return None
    if mask is None:
        return pattern.mean(dim=0)
    valid = mask.double()  # [N, S]
    pair = valid[:, None, :, None] * valid[:, None, None, :]  # [N, 1, S, S]
    counts = pair.sum(dim=0)  # [1, S, S]
    mean = (pattern * pair).sum(dim=0) / counts.clamp_min(1.0)  # [A, S, S]
    length = int(valid.sum(dim=1).max())
    return mean[:, :length, :length]


def _is_pattern(folder: RunFolder, key: str) -> bool:
    info = parse_key(key)
    site = folder.entry(key).get("site", info.name)
    return info.kind == "capture" and info.suffix is None and site == "attn_pattern"


def attention_section(folder: RunFolder) -> Section | None:
    """Small multiples of every captured attention pattern; None if none was captured."""
    keys = sorted((k for k in folder.keys if _is_pattern(folder, k)),
                  key=lambda k: (forward_position(parse_key(k)), k))
    patterns = []
    for key in keys:
        mask_key = key + ".mask"
        loaded = folder.tensors([key] + ([mask_key] if mask_key in folder.layout else []))
        mean = mean_pattern(loaded[key], loaded.get(mask_key))
        if mean is not None:
            patterns.append((key, mean))
    if not patterns:
        return None
    shown = patterns[:MAX_ROWS]
    heads = min(MAX_HEADS, max(p.shape[0] for _, p in shown))
    rows = len(shown)
    fig = new_figure(1.3 * heads + 0.45, 1.3 * rows + 0.3, rows=rows, columns=heads,
                     left=0.45, right=0.1, bottom=0.1, top=0.3, gap_x=0.1, gap_y=0.1)
    grid = fig.subplots(len(shown), heads, squeeze=False)
    for row, (key, mean) in enumerate(shown):
        info = parse_key(key)
        where = f"L{info.layer}" + ("" if info.head is None else f" h{info.head}")
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
                ax.set_title(f"attn head {col}", fontsize=7)
            if col == 0:
                ax.set_ylabel(where, fontsize=8)
    caption = "Attention weights (query down, key across), mean over samples."
    if len(patterns) > len(shown) or any(p.shape[0] > heads for _, p in patterns):
        caption += f" Capped at {MAX_ROWS} layers x {MAX_HEADS} heads."
    return Section(anchor="attention", title="Attention patterns",
                   body=figure(to_svg(fig), caption))
