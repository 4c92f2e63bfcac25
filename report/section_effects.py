"""The effects section: how much each intervened head differs, per sample and on average.

Per effect (`effect/{name}/head{h}`): each head's per-sample values drawn as points over a
quartile box, with the head's mean and its 95% confidence interval as an error bar
(`report/effect_stats.py`); a table with the same numbers; and, for a layer sweep (one head
per layer, `report/intervention_layout.py`), the mean over layers as a line with its
interval as a band, heads without an intervention drawn as a dashed level to compare with.
Then the interventions in words with the units each changed (`report/intervention_tables.py`).
"""

from __future__ import annotations

import math

import torch

from expc.report.effect_stats import EffectHead
from expc.report.figures import FULL_WIDTH, head_color, new_figure, to_svg
from expc.report.html_parts import Section, esc, figure, fmt_interval, fmt_number, table
from expc.report.intervention_layout import intervention_nodes, layer_sweep
from expc.report.intervention_tables import intervention_tables
from expc.report.run_folder import RunFolder
from expc.report.tokens import TokenText

PANEL_COLUMNS = 2
MAX_TEXT = 90  # characters of a sample's text in the per-sample table
MAX_POINTS = 1000  # per-sample points drawn per head (evenly spaced beyond that)
JITTER = 0.16
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DISTRIBUTION_CAPTION = (
    "Per-sample values of each effect, per head: points (one per sample), box from the 25th "
    "to the 75th percentile with the median as a line, whiskers from the 5th to the 95th "
    "percentile; in black each head's mean with its 95% confidence interval "
    "(mean ± 1.96 s/√n).")
SWEEP_CAPTION = (
    "Layer sweep: the mean effect of the head that intervenes at each layer, with its 95% "
    "confidence interval as a band; dashed: heads without an intervention.")


def _title(heads: list[EffectHead]) -> str:
    name, metric = heads[0].name, heads[0].metric
    return name if name == metric else f"{name} ({metric})"


def _tick(effect: EffectHead, sweep: dict[int, int]) -> str:
    layer = sweep.get(effect.head) if effect.head is not None else None
    return effect.head_label if layer is None else f"{effect.head_label}\nlayer {layer}"


def _points(values: torch.Tensor) -> torch.Tensor:
    if values.numel() <= MAX_POINTS:
        return values
    return values[torch.linspace(0, values.numel() - 1, MAX_POINTS).long()]


def _draw_head(ax, x: int, effect: EffectHead, jitter: torch.Generator) -> None:
    values = effect.finite
    if values.numel() == 0:
        return
    color = head_color(0 if effect.head is None else effect.head)
    shown = _points(values)
    offsets = (torch.rand(shown.numel(), generator=jitter, dtype=torch.float64) - 0.5) * 2
    ax.scatter((x - 0.1 + JITTER * offsets).numpy(), shown.numpy(), s=6, alpha=0.35,
               color=color, linewidths=0)
    q = torch.quantile(values, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    ax.vlines(x - 0.1, q[0], q[4], color="#888888", linewidth=1)
    ax.vlines(x - 0.1, q[1], q[3], color=color, linewidth=7, alpha=0.45)
    ax.hlines(q[2], x - 0.22, x + 0.02, color=color, linewidth=1.5)
    summary = effect.summary
    low = summary.mean if summary.low is None else summary.low
    high = summary.mean if summary.high is None else summary.high
    ax.errorbar([x + 0.22], [summary.mean], yerr=[[summary.mean - low], [high - summary.mean]],
                fmt="o", markersize=4, color="black", capsize=3, linewidth=1.2)


def _distributions_svg(groups: dict[str, list[EffectHead]], sweep: dict[int, int]) -> str:
    columns = min(PANEL_COLUMNS, len(groups))
    rows = math.ceil(len(groups) / columns)
    fig = new_figure(FULL_WIDTH, 3.8 * rows, rows=rows, columns=columns, bottom=0.8, gap_y=1.1)
    jitter = torch.Generator().manual_seed(0)  # the same run gives the same page
    for i, heads in enumerate(groups.values()):
        ax = fig.add_subplot(rows, columns, i + 1)
        for x, effect in enumerate(heads):
            _draw_head(ax, x, effect, jitter)
        ax.set_xticks(range(len(heads)), [_tick(e, sweep) for e in heads], fontsize=9)
        ax.set_xlim(-0.6, len(heads) - 0.4)
        ax.set_ylabel(heads[0].metric)
        ax.set_title(_title(heads))
    return to_svg(fig)


def _sweep_svg(groups: dict[str, list[EffectHead]], sweep: dict[int, int]) -> str | None:
    drawn = []
    for heads in groups.values():
        points = sorted((sweep[e.head], e.summary) for e in heads
                        if e.head in sweep and e.summary.mean is not None)
        levels = [e for e in heads if e.head not in sweep and e.summary.mean is not None]
        if len(points) >= 2:
            drawn.append((heads, points, levels))
    if not drawn:
        return None
    columns = min(PANEL_COLUMNS, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    fig = new_figure(FULL_WIDTH, 3.4 * rows, rows=rows, columns=columns)
    for i, (heads, points, levels) in enumerate(drawn):
        ax = fig.add_subplot(rows, columns, i + 1)
        layers = [layer for layer, _ in points]
        means = [s.mean for _, s in points]
        ax.fill_between(layers, [s.mean if s.low is None else s.low for _, s in points],
                        [s.mean if s.high is None else s.high for _, s in points],
                        color="#4c72b0", alpha=0.2, linewidth=0, label="95% CI")
        ax.plot(layers, means, marker="o", markersize=3, color="#4c72b0", label="mean")
        for effect in levels:
            ax.axhline(effect.summary.mean, linestyle="--", linewidth=1,
                       color=head_color(0 if effect.head is None else effect.head),
                       label=f"{effect.head_label}, no intervention")
        ax.set_xticks(layers)
        ax.set_xlabel("intervened layer")
        ax.set_ylabel(heads[0].metric)
        ax.set_title(_title(heads))
        ax.legend(fontsize=9)
    return to_svg(fig)


def _table(groups: dict[str, list[EffectHead]], sweep: dict[int, int]) -> str:
    rows = [(e.name, e.head_label, "-" if e.reference is None else f"head {e.reference}",
             sweep.get(e.head, "-"), e.summary.n, fmt_number(e.summary.mean) or "-",
             fmt_interval(e.summary.low, e.summary.high), e.meaning)
            for heads in groups.values() for e in heads]
    return table(("effect", "head", "vs", "intervened layer", "n", "mean", "95% CI", "what"),
                 rows)


def _samples_table(groups: dict[str, list[EffectHead]], tokens: TokenText) -> str:
    """Each effect's per-sample values beside the prompt text, for the first samples the
    run recorded as text (`data.preview`)."""
    indices = sorted(tokens.samples)
    heads = [e for group in groups.values() for e in group]
    indices = [i for i in indices if all(i < e.values.numel() for e in heads)]
    if not indices:
        return ""
    header = ["sample", "text"] + [f"{_title([e])} {e.head_label}" for e in heads]
    rows = [[i, _short(tokens.samples[i].text)] + [fmt_number(float(e.values[i])) for e in heads]
            for i in indices]
    return ("<details><summary>Per-sample values of the first samples, with their text"
            "</summary>" + table(header, rows) + "</details>")


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _dropped_note(groups: dict[str, list[EffectHead]]) -> str:
    dropped = [e for heads in groups.values() for e in heads if e.dropped]
    if not dropped:
        return ""
    named = ", ".join(f"{e.key} ({e.dropped})" for e in dropped)
    return (f"<p><strong>Non-finite values left out of these numbers and figures:</strong> "
            f"{esc(named)}.</p>")


def effects_section(folder: RunFolder, groups: dict[str, list[EffectHead]]
                    ) -> Section | None:
    """The effects section of `groups` (`effect_stats.effect_groups`), titled Interventions
    when the run measured no effect; None when the run has neither."""
    interventions = intervention_tables(folder)
    if not groups and not interventions:
        return None
    parts = []
    if groups:
        sweep = layer_sweep(intervention_nodes(folder.manifest))
        names = ", ".join(esc(_title(heads)) for heads in groups.values())
        parts.append(f"<p>Effects: {names}. Statistics over each head's samples.</p>")
        parts.append(figure(_distributions_svg(groups, sweep), DISTRIBUTION_CAPTION))
        sweep_svg = _sweep_svg(groups, sweep) if sweep else None
        if sweep_svg is not None:
            parts.append(figure(sweep_svg, SWEEP_CAPTION))
        parts.append(_table(groups, sweep) + _dropped_note(groups)
                     + _samples_table(groups, TokenText.from_manifest(folder.manifest)))
    if interventions and groups:
        parts.append("<h3>Interventions</h3>")
    parts.append(interventions)
    title = "Effects" if groups else "Interventions"
    return Section(anchor=title.lower(), title=title, body="".join(parts))
