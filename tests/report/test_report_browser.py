"""A real browser opens the report from disk: Debian's headless Chromium (installed by
`.ci/run`) must log no console message, make no network request, and render a non-blank page.

Console messages come from Chromium's own log (`--enable-logging=stderr`), network requests
from its net log (`--log-net-log`): every request a page starts carries its page's initiator,
while Chromium's own background traffic is marked "not an origin". DNS is mapped to nowhere,
so nothing can leave the machine even if a request is attempted. A control page with a
console error, a remote image and nothing drawn proves each check can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import attrs
import numpy
import pytest
from matplotlib.image import imread

from expc.report.build import write_report

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0")
WIDTH = 1366  # a laptop screen
REMOTE_URL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""")  # in the DOM


@attrs.frozen(kw_only=True)
class Visit:
    """What Chromium did with one page."""

    console: list[str]
    requests: list[str]
    dom: str
    pixels: numpy.ndarray  # [H, W, C] screenshot, floats in [0, 1]


def chromium() -> str:
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        pytest.fail("headless Chromium is required for the report's browser test but "
                    f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium")
    return found


def _chromium(page: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = work / f"profile-{len(list(work.iterdir()))}"
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra,
                           page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)


def _page_requests(net_log: Path) -> list[str]:
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    starts = [e.get("params", {}) for e in log["events"] if e["type"] == start_job]
    return [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"]


def visit(page: Path, work: Path) -> Visit:
    """Load `page` twice in headless Chromium: a screenshot with logs, then the DOM."""
    work.mkdir(parents=True, exist_ok=True)
    shot, net_log = work / "shot.png", work / "net.json"
    shown = _chromium(page, work, f"--window-size={WIDTH},2400", f"--screenshot={shot}",
                      f"--log-net-log={net_log}")
    dumped = _chromium(page, work, "--dump-dom")
    return Visit(console=[line for line in shown.stderr.splitlines() if ":CONSOLE" in line],
                 requests=_page_requests(net_log), dom=dumped.stdout, pixels=imread(shot))


def is_blank(pixels: numpy.ndarray) -> bool:
    """A page with (almost) one color everywhere."""
    gray = pixels[..., :3].mean(axis=-1)  # [H, W]
    return float(gray.var()) < 1e-3 or float((gray < 0.9).mean()) < 0.005


def test_the_checks_catch_console_errors_network_requests_and_blank_pages(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>control</title></head><body>'
                   '<img src="https://example.invalid/x.png">'
                   '<script>console.error("boom")</script></body></html>')
    seen = visit(bad, tmp_path / "bad")
    assert any('"boom"' in line for line in seen.console)
    assert "https://example.invalid/x.png" in seen.requests
    assert REMOTE_URL.search(seen.dom)
    assert is_blank(seen.pixels)


def test_report_loads_in_chromium_cleanly_offline_and_renders(write_run, ir_nodes, tmp_path):
    run = write_run(tmp_path / "run", status="failed", n_layers=4, trunk=0, heads=5,
                    interventions=[ir_nodes.intervene("mlp_out", [h - 1], [h])
                                   for h in range(1, 5)],
                    effects=[ir_nodes.effect("kl", "1:", reference=0),
                             ir_nodes.effect("loss", "*")])
    files = write_report(run)
    seen = visit(files.html, tmp_path / "browser")
    assert seen.console == []
    assert seen.requests == []
    assert not REMOTE_URL.search(seen.dom)
    assert "Attention patterns" in seen.dom and "<svg" in seen.dom
    assert '<section id="effects">' in seen.dom and "Layer sweep" in seen.dom
    assert 'class="banner failed"' in seen.dom
    assert not is_blank(seen.pixels)
    assert seen.pixels.shape[:2] == (2400, WIDTH)
    # the attention viewer's script ran without a console message and drew one sample's map:
    # layer 0's pattern reduced over queries comes first: attention head x key cells, key
    # labels (positions here: no token text recorded), a colorbar
    viewer = re.search(r'<div class="attn-map">(<svg.*?</svg>)</div>', seen.dom, re.DOTALL)
    assert viewer is not None, "the attention viewer drew nothing"
    assert viewer.group(1).count("<rect") >= 25 and ">weight</text>" in viewer.group(1)
    assert ">attention head</text>" in viewer.group(1) and ">key token</text>" in viewer.group(1)
    assert "sample 0" in viewer.group(1) and ">head 3</text>" in viewer.group(1)
    assert '<option value="1">layer 1</option>' in seen.dom
