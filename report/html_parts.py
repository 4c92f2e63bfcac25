"""Small HTML builders for the report; every value passes through `esc`.

Paths, prompts, spec text, tensor meanings and error messages are user input. Nothing is
written into the page except through these helpers (or as an SVG made by matplotlib), so
escaping cannot be forgotten in one place.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

import attrs


def esc(value: object) -> str:
    """Any value as HTML text, quotes included (safe in attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


@attrs.frozen(kw_only=True)
class Section:
    """One section of the report: a heading, its figures and tables as HTML."""

    anchor: str
    title: str
    body: str


def figure(svg: str, caption: str) -> str:
    """An inline SVG figure with an escaped caption."""
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A table with escaped cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td>{esc(v)}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def facts(pairs: Iterable[tuple[str, object]]) -> str:
    """A definition list of label/value pairs, skipping empty values."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs
                    if v not in (None, "", {}))
    return f"<dl>{items}</dl>" if items else ""


TINY = 1e-4  # below this magnitude a number is written in scientific notation


def fmt_number(value: float | int | None, digits: int = 4) -> str:
    """A number for people, the one formatter of the report (tables, captions, axis ticks):
    thousands separated and never in scientific notation from 1,000 up (`19,720`, not
    `1.972e+04`; decimals there only when `digits` exceeds the whole digits: `1,000.25` at 6),
    `digits` significant digits below (`0.0767`, `5.544`), scientific only
    for magnitudes under 1e-4 (`3.2e-06`); NaN and infinities by name."""
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    if abs(value) < TINY:
        return f"{value:.{max(1, digits - 2)}e}"
    text = f"{value:.{digits}g}"
    if abs(float(text)) < 1000:
        return text
    whole = len(str(abs(round(value))))  # digits before the point
    return f"{value:,.{max(0, digits - whole)}f}"  # decimals only when `digits` asks for them


def fmt_interval(low: float | None, high: float | None, digits: int = 4) -> str:
    """An interval for tables: `[0.0101, 0.0145]`, `-` where there is none."""
    if low is None or high is None:
        return "-"
    return f"[{fmt_number(low, digits)}, {fmt_number(high, digits)}]"
