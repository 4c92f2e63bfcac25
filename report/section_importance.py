"""The importance section: one figure per metric, then the pruning candidates.

KV-head and layer-norm scores and the iterative ranking are drawn as heatmaps (module x
unit), channel scores as per-module distributions (quartile boxes), scores of whole layers
(`block_influence`) as one line over the layers per model (per Hydra head, the trunk's
layers shared). The table of
lowest-scoring units per module is offered for download as JSON through a `data:` link, so
the page stays one self-contained file.
"""

from __future__ import annotations

import base64
import json

import torch

from expc.report.figures import FULL_WIDTH, TRUNK_COLOR, head_color, new_figure, to_svg
from expc.report.html_parts import Section, esc, figure, fmt_number, table
from expc.report.importance_stats import Scored, layer_series, pruning_candidates, scored_modules
from expc.report.run_folder import RunFolder

HEATMAP_METRICS = {"kv_head_contribution": "kv head", "layernorm_contribution": "channel",
                   "iterative_channel": "channel"}
MAX_MODULE_LABELS = 40
CAPTIONS = {
    "kv_head_contribution": "Score of each KV head per attention output projection.",
    "layernorm_contribution": "Mean |output| of each channel of the norm, per layer.",
    "l2_norm": "Distribution over channels of the L2-norm score, per module (box: quartiles, "
               "whiskers: 5th-95th percentile, orange: median).",
    "channel_contribution": "Distribution over channels of weight-column norm x mean |input|, "
                            "per module.",
    "iterative_channel": "Pruning order of each channel (lower = pruned earlier = less "
                         "important), per module.",
    "block_influence": "1 - mean cosine between each layer's input and output residual "
                       "stream over the real tokens (higher = the layer changes more = more "
                       "important; the lowest are dropped first), per layer.",
}


def _by_role(modules: list[Scored]) -> dict[str, list[Scored]]:
    roles: dict[str, list[Scored]] = {}
    for scored in modules:
        if scored.score is not None and scored.score.dim() == 1:
            roles.setdefault(scored.role, []).append(scored)
    return roles


def _label_modules(ax, modules: list[Scored], *, axis: str) -> None:
    """Module labels on one axis, thinned to at most MAX_MODULE_LABELS."""
    step = max(1, -(-len(modules) // MAX_MODULE_LABELS))
    ticks = list(range(0, len(modules), step))
    labels = [modules[t].short_label for t in ticks]
    if axis == "x":
        ax.set_xticks(ticks, labels, rotation=90, fontsize=9)
    else:
        ax.set_yticks(ticks, labels, fontsize=9)


def _heatmap(metric: str, roles: dict[str, list[Scored]]) -> str:
    height = max(1.2 + 0.07 * min(len(m), 2 * MAX_MODULE_LABELS) for m in roles.values())
    fig = new_figure(FULL_WIDTH, (height + 0.9) * len(roles), rows=len(roles), gap_y=0.9)
    for i, (role, modules) in enumerate(roles.items()):
        width = max(s.score.numel() for s in modules)
        grid = torch.full((len(modules), width), float("nan"))  # [modules, units]
        for row, scored in enumerate(modules):
            grid[row, : scored.score.numel()] = scored.score.float()
        ax = fig.add_subplot(len(roles), 1, i + 1)
        image = ax.imshow(grid.numpy(), aspect="auto", interpolation="nearest", cmap="viridis")
        _label_modules(ax, modules, axis="y")
        if width <= 32:
            ax.set_xticks(range(width))
        ax.set_xlabel(HEATMAP_METRICS[metric])
        ax.set_ylabel("module")
        ax.set_title(f"{metric} at {role}")
        ax.grid(False)
        fig.colorbar(image, ax=ax, shrink=0.9).set_label(
            "pruning order" if metric == "iterative_channel" else "score")
    return to_svg(fig)


def _distributions(metric: str, roles: dict[str, list[Scored]]) -> str:
    """Per-module box (quartiles), whiskers (5th-95th percentile) and median, drawn as three
    line collections per panel: cheap even with a hundred modules of thousands of channels."""
    fig = new_figure(FULL_WIDTH, 3.8 * len(roles), rows=len(roles), bottom=0.75, gap_y=1.1)
    levels = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    for i, (role, modules) in enumerate(roles.items()):
        ax = fig.add_subplot(len(roles), 1, i + 1)
        q = torch.stack([torch.quantile(s.score.double(), levels) for s in modules])  # [M, 5]
        x = torch.arange(len(modules)).numpy()
        ax.vlines(x, q[:, 0].numpy(), q[:, 4].numpy(), color="#888888", linewidth=1)
        ax.vlines(x, q[:, 1].numpy(), q[:, 3].numpy(), color="#4c72b0", linewidth=6)
        ax.hlines(q[:, 2].numpy(), x - 0.3, x + 0.3, color="#dd8452", linewidth=1.5)
        _label_modules(ax, modules, axis="x")
        ax.set_xlabel("module")
        ax.set_ylabel("score")
        ax.set_title(f"{metric} at {role}")
    return to_svg(fig)


def _layer_lines(metric: str, series: dict[int | None, list[Scored]]) -> str:
    """One marked line over the layers per model: the score of each whole layer."""
    fig = new_figure(FULL_WIDTH, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for head, scored in series.items():
        ax.plot([s.layer for s in scored], [float(s.score) for s in scored], marker="o",
                color=TRUNK_COLOR if head is None else head_color(head),
                label="model" if head is None else f"head {head}")
    if any(head is not None for head in series):
        ax.legend(fontsize=9)
    ax.set_xlabel("layer")
    ax.set_ylabel("score")
    ax.set_title(f"{metric} per layer")
    return to_svg(fig)


def _metric_figure(metric: str, modules: list[Scored]) -> str | None:
    series = layer_series(modules)
    if series:
        svg = _layer_lines(metric, series)
        return figure(svg, CAPTIONS.get(metric, f"{metric} score of each layer."))
    roles = _by_role(modules)
    if not roles:
        return None
    svg = _heatmap(metric, roles) if metric in HEATMAP_METRICS else _distributions(metric, roles)
    return figure(svg, CAPTIONS.get(metric, f"Distribution of {metric} scores per module."))


def _candidates_block(rows: list[dict]) -> str:
    if not rows:
        return ""
    cells = [(r["metric"], r["module"], r["unit"],
              ", ".join(f"{c['index']} ({fmt_number(c['score'], 3)})" for c in r["lowest"]))
             for r in rows]
    payload = base64.b64encode(json.dumps(rows, indent=1).encode()).decode("ascii")
    link = (f'<p><a download="pruning_candidates.json" '
            f'href="data:application/json;base64,{payload}">Download as JSON</a></p>')
    return ("<h3>Pruning candidates</h3><p>Lowest-scoring units per module, lowest first "
            "(index, score).</p>" + link
            + table(("metric", "module", "unit", "lowest"), cells))


def importance_section(folder: RunFolder) -> tuple[Section | None, list[dict]]:
    """The importance section (None without importance results) and the candidate rows."""
    by_metric = scored_modules(folder)
    figures = [f for f in (_metric_figure(m, mods) for m, mods in by_metric.items()) if f]
    candidates = pruning_candidates(by_metric)
    if not figures:
        return None, candidates
    headings = [esc(m) for m in by_metric]
    intro = f"<p>Metrics: {', '.join(headings)}.</p>"
    return (Section(anchor="importance", title="Importance",
                    body=intro + "".join(figures) + _candidates_block(candidates)),
            candidates)
