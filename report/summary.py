"""`summary.md`: the report in a few Markdown lines for CI logs and pull requests.

Values from the manifest are user input: they are escaped for Markdown tables and for the
HTML that Markdown renderers let through.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from expc.report.effect_stats import EffectHead
from expc.report.html_parts import fmt_interval, fmt_number
from expc.report.nonfinite import NonFiniteCount
from expc.report.run_folder import RunFolder

CANDIDATE_LINES = 20
NONFINITE_KEYS = 10  # keys named in the summary's warning (the report lists them all)


def md(value: object) -> str:
    """A value safe inside Markdown (and table cells): HTML-escaped, pipes and ticks escaped."""
    text = html.escape("" if value is None else str(value), quote=False)
    return text.replace("|", "\\|").replace("`", "\\`").replace("\n", " ")


def _nonfinite_line(nonfinite: Mapping[str, NonFiniteCount]) -> list[str]:
    if not nonfinite:
        return []
    named = ", ".join(f"{md(key)} ({count})" for key, count in
                      list(nonfinite.items())[:NONFINITE_KEYS])
    more = (f" and {len(nonfinite) - NONFINITE_KEYS} more" if len(nonfinite) > NONFINITE_KEYS
            else "")
    return [f"- **warning: {len(nonfinite)} tensors hold NaN or inf**: {named}{more}"]


def _effect_lines(effects: Mapping[str, Sequence[EffectHead]]) -> list[str]:
    """Each effect's mean and 95% interval per head, as a table."""
    if not effects:
        return []
    lines = ["", "## Effects (mean and 95% confidence interval per head)", "",
             "| effect | head | vs | n | mean | 95% CI |", "| --- | --- | --- | --- | --- | --- |"]
    for heads in effects.values():
        for e in heads:
            s = e.summary
            vs = "-" if e.reference is None else f"head {e.reference}"
            lines.append(f"| {md(e.name)} | {md(e.head_label)} | {vs} | {s.n} "
                         f"| {fmt_number(s.mean) or '-'} | {fmt_interval(s.low, s.high)} |")
    return lines


def render_summary(folder: RunFolder, *, sections: Sequence[str], candidates: list[dict],
                   nonfinite: Mapping[str, NonFiniteCount] | None = None,
                   effects: Mapping[str, Sequence[EffectHead]] | None = None) -> str:
    """Markdown summary of a run and its report (`nonfinite`: keys holding NaN or inf;
    `effects`: `effect_stats.effect_groups` of the run)."""
    m = folder.manifest
    model = m.get("model", {})
    hydra = model.get("hydra") or {}
    data = m.get("data", {})
    timings = m.get("timings", {})
    kinds: dict[str, int] = {}
    for key in folder.keys:
        kinds[key.partition("/")[0]] = kinds.get(key.partition("/")[0], 0) + 1
    lines = [
        f"# expc report: {md(folder.title)}",
        "",
        f"- status: **{md(m.get('status'))}**",
        f"- model: {md(model.get('path'))} ({md(model.get('architecture'))}, "
        f"{md(model.get('n_layers'))} layers, trunk {md(hydra.get('trunk'))}, "
        f"heads {md(hydra.get('heads'))})",
        f"- data: {md(data.get('samples'))} samples, {md(data.get('tokens'))} tokens",
        f"- time: {fmt_number((timings.get('seconds') or {}).get('total'))} s, "
        f"{fmt_number(timings.get('tokens_per_s'))} tokens/s",
        f"- tensors: {len(folder.keys)} ("
        + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")",
        f"- sections: {', '.join(sections)}",
        f"- spec sha256: {md(m.get('spec', {}).get('sha256'))}",
    ]
    metrics = sorted({row["metric"] for row in candidates})
    if metrics:
        lines.append(f"- importance: {', '.join(md(x) for x in metrics)}")
    if m.get("error"):
        lines.append(f"- error: {md(m['error'].get('message'))}")
    lines += _nonfinite_line(nonfinite or {})
    lines += _effect_lines(effects or {})
    if candidates:
        lines += ["", "## Pruning candidates (lowest scores first)", "",
                  "| metric | module | unit | lowest |", "| --- | --- | --- | --- |"]
        for row in candidates[:CANDIDATE_LINES]:
            lowest = ", ".join(str(c["index"]) for c in row["lowest"])
            lines.append(f"| {md(row['metric'])} | {md(row['module'])} | {md(row['unit'])} "
                         f"| {lowest} |")
        if len(candidates) > CANDIDATE_LINES:
            lines.append(f"\n{len(candidates) - CANDIDATE_LINES} more modules in report.html.")
    return "\n".join(lines) + "\n"
