"""Matplotlib figures turned into inline SVG for a self-contained, printable HTML page.

Figures are made with the object API (`matplotlib.figure.Figure`, Agg-family canvases, no
pyplot state), so a report can be built in any process without a display. The SVG keeps text
as text (small files, selectable, prints sharply); its XML prolog, DOCTYPE and metadata are
dropped so it can sit inside HTML and carries no URLs; ids come from a fixed salt so the
same run gives the same page.

Figures are drawn `FULL_WIDTH` inches wide, which the page shows at about its natural size
on a 1366 px laptop screen (1 in = 96 px), so 10 pt text stays readable; every numeric tick
label, colorbars included, goes through the report's one number formatter
(`html_parts.fmt_number`): `19,720`, not `1.972e+04` or an offset like `1e-22`.
"""

from __future__ import annotations

import io
import math
import re

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import Formatter, ScalarFormatter  # noqa: E402

from expc.report.html_parts import fmt_number  # noqa: E402

STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "expc-report",
    "font.size": 10,
    "axes.titlesize": 11,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
FULL_WIDTH = 12.0  # inches: the page's content width on a laptop screen
TRUNK_COLOR = "#222222"


class HumanTicks(Formatter):
    """Tick labels through `fmt_number`, with just enough significant digits that
    neighbouring ticks differ (5.542, 5.544, not 5.54 twice) and no offset or exponent."""

    digits = 3

    def set_locs(self, locs) -> None:
        super().set_locs(locs)
        values = sorted(float(v) for v in locs)
        steps = [b - a for a, b in zip(values, values[1:]) if b > a]
        largest = max((abs(v) for v in values), default=0.0)
        if steps and largest > 0:
            self.digits = max(3, math.ceil(math.log10(largest / min(steps))) + 1)

    def __call__(self, value, pos=None) -> str:
        return fmt_number(float(value), self.digits)
_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def head_color(head: int) -> str:
    """A stable color per Hydra head (tab10, cycled)."""
    return matplotlib.colormaps["tab10"](head % 10)


def new_figure(width: float, height: float, *, rows: int = 1, columns: int = 1,
               left: float = 0.95, right: float = 0.25, bottom: float = 0.6, top: float = 0.35,
               gap_x: float = 0.75, gap_y: float = 0.75) -> Figure:
    """A blank `width` x `height` inch figure with the report's style and a fixed grid of
    margins and gaps given in inches (a layout engine would double the drawing time)."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height))
    axes_w = max(0.1, (width - left - right - gap_x * (columns - 1)) / columns)
    axes_h = max(0.1, (height - top - bottom - gap_y * (rows - 1)) / rows)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=gap_x / axes_w, hspace=gap_y / axes_h)
    return fig


def _human_ticks(figure: Figure) -> None:
    """Numeric tick labels of every axis (colorbars too) in the report's number format;
    axes labelled with names (layers, modules, tokens) keep their labels."""
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), ScalarFormatter):
                axis.set_major_formatter(HumanTicks())


def to_svg(figure: Figure) -> str:
    """The figure as an `<svg>` element ready to inline in HTML."""
    _human_ticks(figure)
    buffer = io.StringIO()
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = _METADATA.sub("", _PROLOG.sub("", buffer.getvalue(), count=1), count=1)
    return svg.replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "", 1).replace(
        "xlink:href", "href")
