""""Did you mean ...?" help lines for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], *, prefix: str = "") -> tuple[str, ...]:
    """One help line naming the closest choice, or none when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return (f"did you mean `{prefix}{close[0]}`?",) if close else ()


def one_of(choices: Iterable[str]) -> str:
    """`a`, `b` or `c` — for messages listing what is allowed."""
    items = [f"`{c}`" for c in choices]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
