"""What pruning costs: the fraction of units removed -> the mean effect, one line per way of
choosing them (the metric and lowest/highest, or random), drawn in the Importance section.

The report knows a head's fraction and metric from the manifest's IR interventions
(`ir.interventions`, as `spec.to_json` writes them): a head whose every `intervene`
statement selects its units as `lowest(metric = M, fraction = F)`, `highest(...)` or
`random(fraction = F)`, all with the same kind, metric, target and F, is the point at F of
the series "lowest M" at TARGET (random: "random" at TARGET). A head with no intervention is
the point at 0 of every series, when the effect measured it (e.g. `loss`; an effect `vs`
that head does not). Heads that share a point (random draws with several seeds) are averaged
per sample before the mean and its 95% interval (`effect_stats.interval`). Heads that
select by a list, by `count`, or several ways at once are not on the curve. The curve is
drawn when some series holds at least two fractions: one panel per effect and target
module, a color per metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import matplotlib
import torch

from expc.report.effect_stats import EffectHead, Interval, interval
from expc.report.figures import FULL_WIDTH, new_figure, to_svg
from expc.report.html_parts import Section, esc, figure, fmt_interval, fmt_number, table
from expc.report.intervention_layout import intervention_nodes
from expc.report.run_folder import RunFolder

PANEL_COLUMNS = 2
SCORED = ("lowest", "highest")
CAPTION = ("What pruning costs: per effect, the mean over samples of each way of choosing the "
           "removed units, against the fraction removed (read from each head's `channels = "
           "lowest/highest/random(... fraction = F)`), with its 95% confidence interval as a "
           "band; fraction 0 is the head without interventions where the effect measured it.")


@attrs.frozen(kw_only=True)
class Selection:
    """How a head chose the units it removed."""

    kind: str  # lowest | highest | random
    metric: str | None  # None for random
    target: str
    fraction: float

    @property
    def series(self) -> tuple[str, str]:
        """(target, how): `("mlp.down_proj", "lowest l2_norm")`, `(..., "random")`."""
        return self.target, self.kind if self.metric is None else f"{self.kind} {self.metric}"


@attrs.frozen(kw_only=True)
class Point:
    """One fraction of one series of one effect."""

    fraction: float
    heads: tuple[int, ...]
    summary: Interval


def _selection(node: Mapping) -> Selection | None:
    """The statement's selection when it removes a fraction chosen by kind; else None."""
    units = node.get("channels")
    if not isinstance(units, Mapping) or units.get("kind") not in (*SCORED, "random"):
        return None
    fraction, metric = units.get("fraction"), units.get("metric")
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
        return None
    if units["kind"] in SCORED and not isinstance(metric, str):
        return None
    return Selection(kind=str(units["kind"]), metric=metric if units["kind"] in SCORED else None,
                     target=str(node.get("target", "")), fraction=float(fraction))


def head_selections(manifest: Mapping) -> dict[int, Selection | None]:
    """Hydra head -> its selection, or None for a head without interventions; heads that do
    not reduce to one selection are left out (so is everything without a split)."""
    hydra = (manifest.get("model") or {}).get("hydra") or {}
    n_heads = hydra.get("heads") if isinstance(hydra.get("heads"), int) else 0
    found: dict[int, set[Selection | None]] = {head: set() for head in range(n_heads)}
    for node in intervention_nodes(manifest):
        for head in node.heads:
            if head in found:
                found[head].add(_selection(node.node))
    out: dict[int, Selection | None] = {}
    for head, selections in found.items():
        if not selections:
            out[head] = None
        elif len(selections) == 1 and None not in selections:
            out[head] = selections.pop()
    return out


def _point(fraction: float, heads: list[EffectHead]) -> Point:
    values = torch.stack([h.values for h in heads]).mean(dim=0)  # [N]: per sample over heads
    return Point(fraction=fraction, heads=tuple(h.head for h in heads),
                 summary=interval(values))


Curves = dict[str, dict[tuple[str, str], list[Point]]]


def curves(groups: Mapping[str, list[EffectHead]], selections: Mapping[int, Selection | None]
           ) -> Curves:
    """effect name -> series (target, how) -> its points by fraction; only effects with a
    series of at least two fractions."""
    out: Curves = {}
    for name, heads in groups.items():
        by_series: dict[tuple[str, str], dict[float, list[EffectHead]]] = {}
        baseline = [h for h in heads if h.head in selections and selections[h.head] is None]
        for effect in heads:
            chosen = selections.get(effect.head) if effect.head is not None else None
            if chosen is not None:
                by_series.setdefault(chosen.series, {}).setdefault(chosen.fraction,
                                                                   []).append(effect)
        if not any(len(points) >= 2 for points in by_series.values()):
            continue
        out[name] = {}
        for series, points in sorted(by_series.items()):
            line = [_point(0.0, baseline)] if baseline else []
            line += [_point(f, points[f]) for f in sorted(points)]
            out[name][series] = line
    return out


def _band(ax, points: list[Point], *, how: str, color: object) -> None:
    drawn = [p for p in points if p.summary.mean is not None]
    x = [100 * p.fraction for p in drawn]
    means = [p.summary.mean for p in drawn]
    style = "--" if how == "random" else ":" if how.startswith("highest") else "-"
    ax.plot(x, means, style, marker="o", markersize=3, color=color, label=how)
    ax.fill_between(x, [m if p.summary.low is None else p.summary.low
                        for m, p in zip(means, drawn)],
                    [m if p.summary.high is None else p.summary.high
                     for m, p in zip(means, drawn)], color=color, alpha=0.15, linewidth=0)


def _svg(found: Curves, metrics: Mapping[str, str]) -> str:
    """One panel per effect and target: a color per metric, solid lowest, dotted highest,
    dashed grey random."""
    panels = [(name, target, {how: points for (t, how), points in lines.items() if t == target})
              for name, lines in found.items() for target in dict.fromkeys(t for t, _ in lines)]
    columns = min(PANEL_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = new_figure(FULL_WIDTH, 3.8 * rows, rows=rows, columns=columns, gap_y=0.9)
    palette = matplotlib.colormaps["tab10"]
    colors = {m: palette(i % 10) for i, m in enumerate(
        dict.fromkeys(how.partition(" ")[2] for lines in found.values()
                      for _, how in lines if how != "random"))}
    for i, (name, target, lines) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        for how, points in lines.items():
            color = "#777777" if how == "random" else colors[how.partition(" ")[2]]
            _band(ax, points, how=how, color=color)
        ax.set_xlabel("units removed (%)")
        ax.set_ylabel(metrics.get(name, name))
        ax.set_title(f"{name}: units of {target}", fontsize=9)
        ax.legend(fontsize=6)
    return to_svg(fig)


def _table(found: Curves) -> str:
    rows = [(name, target, how, f"{100 * p.fraction:g}%",
             ", ".join(str(h) for h in p.heads), p.summary.n,
             fmt_number(p.summary.mean) or "-", fmt_interval(p.summary.low, p.summary.high))
            for name, lines in found.items() for (target, how), points in lines.items()
            for p in points]
    return table(("effect", "units of", "chosen by", "removed", "heads", "n", "mean",
                  "95% CI"), rows)


def pruning_curve(folder: RunFolder, groups: Mapping[str, list[EffectHead]]) -> str | None:
    """The curve's HTML (figure and table), or None when no series has two fractions."""
    found = curves(groups, head_selections(folder.manifest))
    if not found:
        return None
    metrics = {name: heads[0].metric for name, heads in groups.items()}
    return ("<h3>What pruning costs</h3>" + figure(_svg(found, metrics), CAPTION)
            + _table(found))


def with_pruning_curve(section: Section | None, folder: RunFolder,
                       groups: Mapping[str, list[EffectHead]]) -> Section | None:
    """The Importance section with the curve appended (a section of its own when the run
    holds no scores: the scores that chose the units live in the earlier run)."""
    curve = pruning_curve(folder, groups)
    if curve is None:
        return section
    if section is None:
        return Section(anchor="importance", title="Importance",
                       body=f"<p>Units removed by importance, measured by {esc(', '.join(groups))}."
                            "</p>" + curve)
    return attrs.evolve(section, body=section.body + curve)
