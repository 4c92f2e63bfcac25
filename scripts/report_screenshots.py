"""Screenshots of the report for the examples, as docs/img/ shows them.

Runs each example into `runs/`, writes its report, and has headless Chromium photograph it
at a laptop's width (1366 px), once at the top and once at each section asked for; the PNGs
are reduced to a small palette so each stays well under 300 KB. Chromium must be installed
(`make browser`); the examples run on the built-in models, on the CPU, in seconds.

    .venv/bin/python scripts/report_screenshots.py --out docs/img [--suffix -before]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from expc.report.build import write_report

log = logging.getLogger("report_screenshots")

WIDTH, HEIGHT = 1366, 1100
COLORS = 64
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND")
# example -> (run folder, sections to photograph besides the top; examples run before it)
SHOTS = {
    "quickstart": ("runs/quickstart", ("run", "captures", "importance"), ()),
    "logit_lens": ("runs/logit_lens", ("model-wide", "attention"), ()),
    "scoring": ("runs/scoring", ("importance",), ()),
    "ablation": ("runs/ablation", ("effects",), ("ablation_means",)),
}


def _run(example: str) -> None:
    subprocess.run([".venv/bin/expc", "run", f"examples/{example}.exp", "--force", "--quiet"],
                   check=True)


def _shoot(page: Path, anchor: str | None, out: Path) -> None:
    """The page's top, or (headless Chromium ignores a #fragment) a copy showing only the
    section `anchor` under the header."""
    html = page.read_text(encoding="utf-8")
    if anchor:
        hide = f"<style>section:not(#{anchor}) {{ display: none; }}</style></head>"
        html = html.replace("</head>", hide, 1)
    with tempfile.TemporaryDirectory() as work:
        shown = Path(work) / "report.html"
        shown.write_text(html, encoding="utf-8")
        subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={work}/profile",
                        f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={out}",
                        shown.as_uri()], check=True, capture_output=True, timeout=120)
    image = Image.open(out).convert("RGB").quantize(colors=COLORS)
    image.save(out, optimize=True)
    log.info("%s: %d KB", out, out.stat().st_size // 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--suffix", default="", help="added to each file name (-before)")
    parser.add_argument("--only", nargs="*", help="examples to photograph (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for example, (run_dir, sections, first) in SHOTS.items():
        if args.only and example not in args.only:
            continue
        for needed in (*first, example):
            _run(needed)
        page = write_report(run_dir).html
        for anchor in (None, *sections):
            name = f"report-{example}-{anchor or 'top'}{args.suffix}.png"
            _shoot(page, anchor, args.out / name)


if __name__ == "__main__":
    main()
