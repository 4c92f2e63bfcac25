"""`expc diff`'s text output, laid out for a terminal of `WIDTH` columns.

Two tables of the keys that are not the same — values (largest absolute and relative
difference) and rankings (top-k overlap and Spearman, `report/rank_compare.py`) — then
notes, warnings and the verdict. Every line fits `WIDTH` columns: table columns have caps,
the key column takes what is left, and a cell longer than its column is cut in the middle
(`layers.12.mlp...down_proj/score` keeps both the metric and the field); prose lines wrap.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from expc.report.diff import KeyDiff, RunDiff
from expc.report.rank_compare import TOP_K_FRACTION

WIDTH = 100
GAP = "  "
ELLIPSIS = "..."
MIN_KEY = 16  # the key column's narrowest width
PATH_WIDTH = 60  # a run folder's path in prose


def shorten_middle(text: str, width: int) -> str:
    """`text` cut to `width` characters by replacing its middle with `...`."""
    if len(text) <= width:
        return text
    keep = max(0, width - len(ELLIPSIS))
    head = keep // 2
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, tuple):
        return "x".join(map(str, value)) or "scalar"
    return str(value)


def _pair(a, b) -> str:
    """One cell for both sides: the value once where they agree, `a/b` where not."""
    return _cell(a) if a == b else f"{_cell(a)}/{_cell(b)}"


def table(rows: Sequence[Sequence[str]], caps: Sequence[int | None], width: int = WIDTH
          ) -> list[str]:
    """Rows as aligned columns within `width`: each column at most its cap, the one column
    whose cap is None (the key) gets the room the others leave, cells cut in the middle."""
    widths = [min(max(len(r[i]) for r in rows), cap or width) for i, cap in enumerate(caps)]
    flexible = list(caps).index(None)
    others = sum(w for i, w in enumerate(widths) if i != flexible) + len(GAP) * (len(caps) - 1)
    widths[flexible] = max(MIN_KEY, min(widths[flexible], width - others))
    return [GAP.join(shorten_middle(c, w).ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in rows]


def _value_rows(keys: Sequence[KeyDiff]) -> list[tuple[str, ...]]:
    header = ("key", "status", "place", "shape", "dtype", "max abs", "max rel")
    return [header] + [(k.key, k.status, k.place, _pair(k.shape_a, k.shape_b),
                        _pair(k.dtype_a, k.dtype_b), _cell(k.max_abs), _cell(k.max_rel))
                       for k in keys]


def _ranking_rows(keys: Sequence[KeyDiff]) -> list[tuple[str, ...]]:
    header = ("ranking key", "status", "place", "units", "top-k overlap", "spearman")
    rows = [header]
    for k in keys:
        r = k.ranking
        overlap = f"{round(r.top_k_overlap * r.k)}/{r.k} ({r.top_k_overlap:.0%})"
        rho = "-" if r.spearman is None else f"{r.spearman:.4f}"
        rows.append((k.key, k.status, k.place, str(r.units), overlap, rho))
    return rows


VALUE_CAPS = (None, 12, 18, 17, 9, 9, 9)
RANKING_CAPS = (None, 12, 18, 7, 16, 8)


def _wrap(line: str, width: int) -> list[str]:
    return textwrap.wrap(line, width=width, subsequent_indent="  ", break_on_hyphens=False)


def render_text(result: RunDiff, width: int = WIDTH) -> str:
    """The keys that are not the same (values, then rankings), notes, and the verdict."""
    lines = [f"warning: run {side.upper()} ({shorten_middle(run, PATH_WIDTH)}) is `{status}`, "
             f"not complete: its results are partial at best, and it never compares the same"
             for side, run, status in result.incomplete]
    differing = [k for k in result.keys if not k.same]
    values = [k for k in differing if k.ranking is None]
    rankings = [k for k in differing if k.ranking is not None]
    table_lines = table(_value_rows(values), VALUE_CAPS, width) if values else []
    if rankings:
        table_lines += _wrap(f"rankings (top-k: the {TOP_K_FRACTION:.0%} most important units; "
                             f"Spearman: all units, ties at their mean rank):", width)
        table_lines += table(_ranking_rows(rankings), RANKING_CAPS, width)
    prose = [f"note: {k.key}: mean {_cell(k.mean_a)} (a) vs {_cell(k.mean_b)} (b)"
             for k in differing if (k.mean_a, k.mean_b) != (None, None)]
    prose += [f"warning: {k.key} holds NaN or inf: {k.nonfinite_a or '-'} (a), "
              f"{k.nonfinite_b or '-'} (b)" for k in result.keys if k.has_nonfinite]
    prose += [f"note: {field} differs: {a!r} (a) vs {b!r} (b)" for field, a, b in result.context]
    same = len(result.keys) - len(differing)
    prose.append(f"{same} of {len(result.keys)} keys the same "
                 f"(atol {result.atol:g}, rtol {result.rtol:g})")
    first = result.first_divergence
    if first is not None:
        prose.append(f"runs differ; first divergence: {first.place} ({first.key})")
    elif result.incomplete:
        prose.append("runs differ: " + ", ".join(f"run {side.upper()} is `{status}`"
                                                 for side, _, status in result.incomplete))
    else:
        prose.append("runs are the same")
    return "\n".join([piece for line in lines for piece in _wrap(line, width)] + table_lines
                     + [piece for line in prose for piece in _wrap(line, width)])
