"""The captures section: per-layer norms (trunk and each head on one plot), cosine
similarity between consecutive layers, and, for Hydra runs, the heads' disagreement.

Each family (capture name + aggregation) gets its own panel, because norms of different
sites live on different scales. Plots with nothing to show are left out, and noise is not
drawn as signal: heads that agree to float precision (`capture_stats.heads_identical`) are
drawn as one line labelled "all heads identical" and left out of the disagreement plot (a
sentence says so when no family disagrees), and a family captured at a single layer is a
number in a table, not a lone dot on an axis.
"""

from __future__ import annotations

import math

from matplotlib.ticker import MaxNLocator

from expc.report.capture_stats import (Family, captured_layers, consecutive_cosine, families,
                                       mean_norm)
from expc.report.figures import FULL_WIDTH, TRUNK_COLOR, head_color, new_figure, to_svg
from expc.report.html_parts import Section, esc, figure, fmt_number, table
from expc.report.run_folder import RunFolder

MAX_LAYER_TICKS = 16

PANEL_COLUMNS = 3


def _line_label(head: int | None, family: Family) -> str:
    if head is None:
        return "trunk"
    if family.identical:
        return f"heads {min(family.heads)}-{max(family.heads)} (all heads identical)"
    return f"head {head}"


def _path_lines(family: Family, values) -> list[tuple[int | None, list[tuple[int, float]]]]:
    """(head, points) per line: the trunk in black, each head from the trunk's last point;
    heads identical to float precision as one line (the first head's)."""
    paths = family.paths()
    if family.identical:
        first = min(family.heads)
        paths = {first: paths[first]}
    trunk_layers = set(family.trunk)
    lines = []
    trunk_points = [p for p in values(next(iter(paths.values()))) if p[0] in trunk_layers]
    if trunk_points:
        lines.append((None, trunk_points))
    for head, path in paths.items():
        if head is None:
            continue
        points = values(path)
        own = [p for p in points if p[0] not in trunk_layers]
        joined = trunk_points[-1:] + own if own and trunk_points else own
        if joined:
            lines.append((head, joined))
    return lines


def _layer_axis(ax, layers: list[int]) -> None:
    """Label the x axis with whole layer numbers: each layer when few, else integer steps."""
    ax.set_xlabel("layer")
    if len(set(layers)) <= MAX_LAYER_TICKS:
        ax.set_xticks(sorted(set(layers)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _panels(families_: list[Family], values, ylabel: str) -> str | None:
    """A grid of panels, one per family with any points; None when all are empty."""
    drawn = [(f, _path_lines(f, values)) for f in families_]
    drawn = [(f, lines) for f, lines in drawn if lines]
    if not drawn:
        return None
    columns = min(PANEL_COLUMNS, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    fig = new_figure(FULL_WIDTH, 3.4 * rows, rows=rows, columns=columns)
    for i, (family, lines) in enumerate(drawn):
        ax = fig.add_subplot(rows, columns, i + 1)
        for head, points in lines:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3,
                    color=TRUNK_COLOR if head is None else head_color(head),
                    label=_line_label(head, family))
        ax.set_title(family.label)
        _layer_axis(ax, [x for _, points in lines for x, _ in points])
        ax.set_ylabel(ylabel)
        if len(lines) > 1:
            ax.legend(fontsize=9)
    return to_svg(fig)


def _norm_points(path):
    return [(layer, mean_norm(v)) for layer, v in path]


def _disagreement(families_: list[Family]) -> str:
    """The heads' disagreement plot of the families whose heads differ; a sentence instead
    for families whose heads agree to float precision (or for all of them)."""
    split = [f for f in families_ if len(f.heads) >= 2 and f.disagreement]
    same = [f for f in split if f.identical]
    differ = [f for f in split if not f.identical]
    parts = []
    if same:
        names = ", ".join(f.label for f in same)
        parts.append(f'<p class="note">All heads identical: the heads agree to float '
                     f"precision in {esc(names)} (a Hydra split without interventions or "
                     "<code>head_models</code> runs copies of one model), so their "
                     "disagreement, rounding noise, is not plotted.</p>")
    if differ:
        parts.append(figure(_disagreement_svg(differ),
                            "Disagreement across heads: variance across heads of the captured "
                            "state, averaged over samples and channels."))
    return "".join(parts)


def _disagreement_svg(families_: list[Family]) -> str:
    lines = [(f, f.disagreement) for f in families_]
    fig = new_figure(FULL_WIDTH, 3.4)
    ax = fig.add_subplot()
    for family, points in lines:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=3, label=family.label)
    _layer_axis(ax, [x for _, points in lines for x, _ in points])
    ax.set_ylabel("variance across heads")
    ax.legend(fontsize=9)
    return to_svg(fig)


def _single_layer_table(single: list[Family]) -> str:
    """Families captured at one layer: their mean norm per path, as numbers."""
    rows = []
    for family in single:
        for head, points in _path_lines(family, _norm_points):
            for layer, value in points:
                rows.append((family.label, layer, _line_label(head, family), fmt_number(value)))
    return ("<p>Captured at a single layer (a number, not a plot): mean over samples of each "
            "sample's L2 norm.</p>" + table(("capture", "layer", "path", "mean ||x||"), rows))


def captures_section(folder: RunFolder) -> Section | None:
    """The captures section, or None when the run captured no per-layer hidden states."""
    found = families(folder)
    if not found:
        return None
    single = [f for f in found if len(captured_layers(f)) == 1]
    found = [f for f in found if len(captured_layers(f)) > 1]
    parts = []
    norms = _panels(found, _norm_points, "mean ||x||")
    if norms:
        parts.append(figure(norms, "Per-layer norm: mean over samples of each sample's L2 "
                                   "norm; the trunk in black, each head from where it leaves "
                                   "the trunk."))
    cosine = _panels(found, consecutive_cosine, "cos(x_L-1, x_L)")
    if cosine:
        parts.append(figure(cosine, "Cosine similarity between consecutive layers: mean over "
                                    "samples of the cosine between a layer's capture "
                                    "and the previous layer's, along each head's path."))
    parts.append(_disagreement(found))
    if single:
        parts.append(_single_layer_table(single))
    parts = [p for p in parts if p]
    if not parts:
        return None
    return Section(anchor="captures", title="Captures", body="".join(parts))
