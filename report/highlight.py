"""Syntax highlighting of `.exp` spec text as HTML, with no dependency and no tokenizer.

One regular expression finds the few things worth coloring — comments, strings, numbers,
keywords, `name =` keys — and every piece, colored or not, is HTML-escaped, so the spec text
(user input) can never inject markup into the report.
"""

from __future__ import annotations

import html
import re

KEYWORDS = ("experiment", "extends", "include", "capture", "importance", "at", "of", "as",
            "heads", "hydra", "data", "output", "true", "false", "none")
_TOKEN = re.compile(
    r"(?P<comment>#[^\n]*)"
    r'|(?P<string>"(?:[^"\\\n]|\\.)*"?)'
    r"|(?P<number>(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b)"
    r"|(?P<key>\b[A-Za-z_]\w*(?=\s*=(?!=)))"
    r"|(?P<keyword>\b(?:" + "|".join(KEYWORDS) + r")\b)"
)
CLASSES = {"comment": "c", "string": "s", "number": "n", "key": "k", "keyword": "kw"}


def highlight(text: str) -> str:
    """The spec as escaped HTML with `<span class=...>` around highlighted tokens."""
    out: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        out.append(html.escape(text[position:match.start()]))
        kind = match.lastgroup
        out.append(f'<span class="{CLASSES[kind]}">{html.escape(match.group())}</span>')
        position = match.end()
    out.append(html.escape(text[position:]))
    return "".join(out)
