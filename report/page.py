"""Assemble sections into one self-contained HTML page: inline CSS, inline SVG, no external
fonts, links or scripts (the attention viewer's own inline script is the only script),
readable on a laptop (content 1,192 px wide at 1366 px, the figures' natural width) and
printable.

A run that is not `complete` gets a banner at the top saying what it is, so a partial
report is never mistaken for a finished one.
"""

from __future__ import annotations

from collections.abc import Sequence

from expc.report.html_parts import Section, esc

CSS = """
:root { --fg: #1d1d1f; --muted: #666; --line: #ddd; --accent: #2a5db0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1240px; padding: 1.5rem; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .3rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem;
     margin-top: 2rem; }
h3 { font-size: 1rem; margin-top: 1.2rem; }
nav a { margin-right: 1rem; color: var(--accent); }
.banner { padding: .6rem 1rem; border-radius: 6px; font-weight: 600; margin: .8rem 0; }
.banner.running { background: #fff4d6; border: 1px solid #e0b400; }
.banner.failed { background: #fde2e1; border: 1px solid #c62828; }
.status { display: inline-block; padding: 0 .5rem; border-radius: 4px; font-size: .85rem;
          background: #e6f4ea; }
.status.running { background: #fff4d6; } .status.failed { background: #fde2e1; }
figure { margin: 1rem 0; break-inside: avoid; page-break-inside: avoid; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .85rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .8rem;
      white-space: pre-wrap; }
pre.error { background: #fde2e1; }
.spec .c { color: #6a737d; } .spec .s { color: #032f62; } .spec .n { color: #005cc5; }
.spec .k { color: #6f42c1; } .spec .kw { color: #d73a49; font-weight: 600; }
table { border-collapse: collapse; font-size: .8rem; margin: .5rem 0; }
th, td { border: 1px solid var(--line); padding: .2rem .5rem; text-align: left;
         vertical-align: top; }
@media print {
  nav { display: none; } body { max-width: none; padding: 0; }
  h2 { break-after: avoid; } details { display: block; }
}
"""
BANNERS = {
    "running": "This run is still running (or was interrupted): the report shows what it has "
               "so far.",
    "failed": "This run failed: the report shows what it had before it stopped.",
}


def render_page(*, title: str, status: str, sections: Sequence[Section]) -> str:
    """The whole report as one HTML document."""
    nav = " ".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    banner = (f'<div class="banner {esc(status)}">{esc(BANNERS[status])}</div>'
              if status in BANNERS else "")
    body = "".join(f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{s.body}</section>'
                   for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>expc report: {esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>expc report: {esc(title)}</h1>'
        f'<span class="status {esc(status)}">{esc(status)}</span>{banner}'
        f"<nav>{nav}</nav></header>{body}</body></html>\n"
    )
