"""The model-wide section: what `embed`, `final_norm` and `logits` captures look like over
the run's samples.

Each family (capture name + aggregation) gets one figure: for `embed` and `final_norm` the
distribution over samples of each sample's L2 norm, for `logits` the distribution of each
sample's softmax entropy (with the uniform distribution's `ln V` marked). Hydra heads are
overlaid in their `head_color`s on shared bins. A `dataset_mean` has one value per head and is
drawn as bars. Beside each figure, a table of the numbers (per head: count, mean, std, min,
median, max) and, for logits, the most frequent argmax token ids with their text
(`report/tokens.py`) and counts (for a `dataset_mean`, the ids of the highest averaged
logits), heads side by side.
"""

from __future__ import annotations

import math

import torch

from expc.report.figures import FULL_WIDTH, TRUNK_COLOR, head_color, new_figure, to_svg
from expc.report.html_parts import Section, esc, figure, fmt_number, table
from expc.report.model_wide_stats import ModelWideCapture, ModelWideFamily, model_wide_families
from expc.report.run_folder import RunFolder
from expc.report.tokens import TokenText

MAX_BINS = 30
MIN_BINS = 5


def _color(member: ModelWideCapture) -> str:
    return TRUNK_COLOR if member.head is None else head_color(member.head)


def _quantity(family: ModelWideFamily) -> str:
    return "softmax entropy (nats)" if family.is_logits else "L2 norm"


def _bin_edges(members: tuple[ModelWideCapture, ...]) -> torch.Tensor:
    """Shared histogram edges over every member's values, `[bins + 1]`."""
    values = torch.cat([m.values for m in members])  # [total]
    low, high = float(values.min()), float(values.max())
    if not high > low:  # one value (or all equal): a bin of width 1 around it
        low, high = low - 0.5, high + 0.5
    per_member = max(m.values.numel() for m in members)
    bins = min(MAX_BINS, max(MIN_BINS, math.ceil(math.sqrt(per_member))))
    return torch.linspace(low, high, bins + 1, dtype=torch.float64)


def _uniform_line(ax, vocab: int) -> None:
    """The entropy of the uniform distribution over the vocabulary, the largest possible."""
    ax.axvline(math.log(vocab), color="#999999", linestyle=":", linewidth=1,
               label=f"uniform: ln {vocab}")


def _histogram_svg(family: ModelWideFamily) -> str:
    fig = new_figure(FULL_WIDTH, 3.4)
    ax = fig.add_subplot()
    edges = _bin_edges(family.members).tolist()
    for member in family.members:
        ax.hist(member.values.tolist(), bins=edges, histtype="step", linewidth=1.4,
                color=_color(member),
                label=f"{member.place} (mean {fmt_number(float(member.values.mean()))})")
    if family.is_logits:
        _uniform_line(ax, family.members[0].vocab)
    ax.set_title(family.label)
    ax.set_xlabel(_quantity(family))
    ax.set_ylabel("samples")
    ax.legend(fontsize=9)
    return to_svg(fig)


def _bars_svg(family: ModelWideFamily) -> str:
    """A `dataset_mean` family: one value per member, as horizontal bars."""
    members = family.members
    fig = new_figure(FULL_WIDTH, 1.3 + 0.35 * len(members), left=1.0)
    ax = fig.add_subplot()
    positions = list(range(len(members)))
    ax.barh(positions, [float(m.values[0]) for m in members], height=0.6,
            color=[_color(m) for m in members])
    ax.set_yticks(positions, [m.place for m in members])
    ax.invert_yaxis()  # first member on top
    xlabel = _quantity(family)
    if family.is_logits:
        _uniform_line(ax, members[0].vocab)
        xlabel += f"; dotted: uniform, ln {members[0].vocab}"
    ax.set_title(family.label)
    ax.set_xlabel(xlabel)
    return to_svg(fig)


def _caption(family: ModelWideFamily) -> str:
    if family.whole_run:
        per_head = ", per head" if len(family.members) > 1 else ""
        return (f"{family.label}: {_quantity(family)} of the vector averaged over every "
                f"token of the run{per_head}.")
    what = ("each sample's softmax entropy" if family.is_logits
            else "each sample's L2 norm")
    overlaid = ", heads overlaid" if len(family.members) > 1 else ""
    text = f"{family.label}: distribution over samples of {what}{overlaid}."
    if any(m.per_token for m in family.members):
        text += " Full capture: each token's value, averaged over the sample's real tokens."
    return text


def _numbers_table(family: ModelWideFamily) -> str:
    rows = []
    for m in family.members:
        v = m.values
        rows.append([m.key, v.numel(), fmt_number(float(v.mean())),
                     fmt_number(float(v.std(unbiased=False))), fmt_number(float(v.min())),
                     fmt_number(float(v.median())), fmt_number(float(v.max()))])
    return table(["key", "samples", "mean", "std", "min", "median", "max"], rows)


def _top_tokens_table(family: ModelWideFamily, tokens: TokenText) -> str:
    """Rank, then (token id, its text, score) per member, side by side."""
    members = family.members
    by = members[0].top_by
    depth = max(len(m.top_tokens) for m in members)
    header = ["rank"] + [f"{m.place} {col}" for m in members for col in ("id", "token", by)]
    rows = []
    for rank in range(depth):
        row: list[object] = [rank + 1]
        for m in members:
            token, score = m.top_tokens[rank] if rank < len(m.top_tokens) else ("", None)
            row += [token, "" if token == "" else tokens.token(token), fmt_number(score)]
        rows.append(row)
    if by == "count":
        unit = "tokens" if any(m.per_token for m in members) else "samples"
        intro = (f"Most frequent top-1 predicted token ids of {family.label} (count of "
                 f"{unit} whose logits peak at the id):")
    else:
        intro = f"Token ids with the highest {by} in {family.label}:"
    return f"<p>{esc(intro)}</p>" + table(header, rows)


def _family_html(family: ModelWideFamily, tokens: TokenText) -> str:
    svg = _bars_svg(family) if family.whole_run else _histogram_svg(family)
    parts = [figure(svg, _caption(family)), _numbers_table(family)]
    if family.is_logits:
        parts.append(_top_tokens_table(family, tokens))
    return "".join(parts)


def model_wide_section(folder: RunFolder) -> Section | None:
    """The model-wide section, or None when the run captured no embed/final_norm/logits."""
    found = model_wide_families(folder)
    if not found:
        return None
    tokens = TokenText.from_manifest(folder.manifest)
    return Section(anchor="model-wide", title="Model-wide captures",
                   body="".join(_family_html(f, tokens) for f in found))
