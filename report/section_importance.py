"""The importance section: one figure per metric, then the pruning candidates.

KV-head and layer-norm scores are drawn as heatmaps (module x unit), channel scores as
per-module distributions (box plots), the iterative ranking as bars of the pruning round of
each channel. The table of lowest-scoring units per module is offered for download as JSON
through a `data:` link, so the page stays one self-contained file.
"""

from __future__ import annotations

import base64
import json
import math

import torch

from expc.report.figures import new_figure, to_svg
from expc.report.html_parts import Section, esc, figure, fmt_number, table
from expc.report.importance_stats import Scored, pruning_candidates, scored_modules
from expc.report.run_folder import RunFolder

HEATMAP_METRICS = {"kv_head_contribution": "kv head", "layernorm_contribution": "channel"}
RANKING_METRIC = "iterative_channel"
MAX_RANKING_PANELS = 6
CAPTIONS = {
    "kv_head_contribution": "Score of each KV head per attention output projection.",
    "layernorm_contribution": "Mean |output| of each channel of the norm, per layer.",
    "l2_norm": "Distribution over channels of the L2-norm score, per module (box: quartiles, "
               "whiskers: 1.5 IQR).",
    "channel_contribution": "Distribution over channels of weight-column norm x mean |input|, "
                            "per module.",
    RANKING_METRIC: "Round in which each channel was pruned (lower = pruned earlier).",
}


def _by_role(modules: list[Scored]) -> dict[str, list[Scored]]:
    roles: dict[str, list[Scored]] = {}
    for scored in modules:
        if scored.score is not None and scored.score.dim() == 1:
            roles.setdefault(scored.role, []).append(scored)
    return roles


def _heatmap(metric: str, roles: dict[str, list[Scored]]) -> str:
    fig = new_figure(7.5, sum(0.8 + 0.16 * len(m) for m in roles.values()) + 0.4)
    for i, (role, modules) in enumerate(roles.items()):
        width = max(s.score.numel() for s in modules)
        grid = torch.full((len(modules), width), float("nan"))  # [modules, units]
        for row, scored in enumerate(modules):
            grid[row, : scored.score.numel()] = scored.score.float()
        ax = fig.add_subplot(len(roles), 1, i + 1)
        image = ax.imshow(grid.numpy(), aspect="auto", interpolation="nearest", cmap="viridis")
        ax.set_yticks(range(len(modules)), [s.short_label for s in modules], fontsize=7)
        if width <= 32:
            ax.set_xticks(range(width))
        ax.set_xlabel(HEATMAP_METRICS[metric])
        ax.set_title(f"{metric} at {role}")
        ax.grid(False)
        fig.colorbar(image, ax=ax, shrink=0.9)
    return to_svg(fig)


def _distributions(metric: str, roles: dict[str, list[Scored]]) -> str:
    fig = new_figure(min(10.0, 2.5 + 0.22 * max(len(m) for m in roles.values())),
                     2.8 * len(roles))
    for i, (role, modules) in enumerate(roles.items()):
        ax = fig.add_subplot(len(roles), 1, i + 1)
        data = [s.score.double().numpy() for s in modules]
        ax.boxplot(data, showfliers=False, widths=0.6)
        ax.set_xticks(range(1, len(modules) + 1), [s.short_label for s in modules],
                      rotation=90, fontsize=7)
        ax.set_ylabel("score")
        ax.set_title(f"{metric} at {role}")
    return to_svg(fig)


def _ranking(modules: list[Scored]) -> str:
    shown = modules[:MAX_RANKING_PANELS]
    columns = min(2, len(shown))
    rows = math.ceil(len(shown) / columns)
    fig = new_figure(4.2 * columns, 2.4 * rows)
    for i, scored in enumerate(shown):
        ax = fig.add_subplot(rows, columns, i + 1)
        rank = scored.score.double()
        rank = torch.where(torch.isfinite(rank), rank, torch.nan)  # never pruned: no bar
        ax.stairs(rank.numpy(), torch.arange(rank.numel() + 1).numpy() - 0.5, fill=True)
        ax.set_xlabel("channel")
        ax.set_ylabel("pruning round")
        ax.set_title(scored.instance)
    return to_svg(fig)


def _metric_figure(metric: str, modules: list[Scored]) -> str | None:
    roles = _by_role(modules)
    if not roles:
        return None
    if metric in HEATMAP_METRICS:
        svg = _heatmap(metric, roles)
    elif metric == RANKING_METRIC:
        svg = _ranking([s for m in roles.values() for s in m])
    else:
        svg = _distributions(metric, roles)
    caption = CAPTIONS.get(metric, f"Distribution of {metric} scores per module.")
    if metric == RANKING_METRIC and sum(map(len, roles.values())) > MAX_RANKING_PANELS:
        caption += f" First {MAX_RANKING_PANELS} modules shown."
    return figure(svg, caption)


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
