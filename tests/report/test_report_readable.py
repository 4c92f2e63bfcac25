"""The report is worth reading (issue 16): numbers for people, figures at a laptop's width,
no rounding noise drawn as signal, a Hydra diagram that matches the model, the device, and
token ids shown as the tokens the run recorded."""

from __future__ import annotations

import json
import re

import pytest

from expc.report.build import build_report
from expc.report.figures import FULL_WIDTH, HumanTicks
from expc.report.html_parts import fmt_number
from expc.report.section_run import hydra_svg

PIECES = {str(i): chr(i) for i in range(32, 127)} | {"257": "<bos>"}


def _section(html: str, anchor: str) -> str:
    return re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.DOTALL).group(1)


def _edit_manifest(run, **changes) -> None:
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    for dotted, value in changes.items():
        outer, _, inner = dotted.partition("__")
        manifest[outer][inner] = value
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(("value", "shown"), [
    (19720.3, "19,720"), (1602, "1,602"), (4020.1, "4,020"), (999.96, "1,000"),
    (0.07671, "0.07671"), (5.5443, "5.544"), (3.2e-6, "3.20e-06"), (0.0, "0"),
    (float("nan"), "NaN"), (None, "")])
def test_numbers_are_formatted_for_people(value, shown):
    assert fmt_number(value) == shown


@pytest.mark.parametrize("locs", [[1000, 1000.25, 1000.5, 1000.75, 1001],
                                  [5.54, 5.542, 5.544], [0, 2000, 4000]])
def test_neighbouring_tick_labels_differ_even_above_a_thousand(locs):
    ticks = HumanTicks()
    ticks.set_locs(locs)
    labels = [ticks(v) for v in locs]
    assert len(set(labels)) == len(labels), labels
    assert all("e+" not in label for label in labels)


def test_figures_fill_a_laptop_width_and_ticks_use_the_number_format(write_run, tmp_path):
    def big(tensors):  # norms in the tens of thousands: matplotlib would write 1e4 offsets
        for key in [k for k in tensors if "resid_out_" in k and "." not in k]:
            tensors[key] = tensors[key] * 20000.0

    html = build_report(write_run(tmp_path / "run", edit=big))[0]
    widths = {float(w) for w in re.findall(r'<svg [^>]*width="([\d.]+)pt"', html)}
    assert widths == {FULL_WIDTH * 72}  # 864 pt = 1,152 px: the page's content width
    assert "max-width: 1240px" in html
    captures = _section(html, "captures")
    assert not re.search(r">[-\d.]+e[+-]\d+<", captures)  # no scientific tick labels
    assert re.search(r">\d{1,3},\d{3}<", captures)  # thousands separated instead


def test_identical_heads_are_drawn_once_and_their_disagreement_is_a_sentence(write_run,
                                                                           tmp_path):
    def same_heads(tensors):  # a split without interventions: every head a copy of head 0
        for key in [k for k in tensors if k.startswith("capture/head")]:
            head0 = re.sub(r"^capture/head\d+/", "capture/head0/", key)
            tensors[key] = tensors[head0].clone()

    html = build_report(write_run(tmp_path / "run", edit=same_heads))[0]
    captures = _section(html, "captures")
    assert "heads 0-2 (all heads identical)" in captures
    assert "head 1</text>" not in captures  # not one line per head
    assert "All heads identical" in captures and "variance across heads" not in captures


def test_heads_that_differ_keep_their_lines_and_disagreement_plot(write_run, tmp_path):
    captures = _section(build_report(write_run(tmp_path / "run"))[0], "captures")
    assert "all heads identical" not in captures.lower()
    assert "variance across heads" in captures


def test_a_single_layer_capture_is_a_number_not_a_dot(write_run, tmp_path):
    captures = _section(build_report(write_run(tmp_path / "run"))[0], "captures")
    # attn_out is captured at layer 1 only (`full`): a table row, no panel titled with it
    assert "<td>attn_out (full)</td><td>1</td><td>trunk</td>" in captures
    assert "attn_out (full)</text>" not in captures


def test_hydra_diagram_matches_the_model():
    encoder = hydra_svg(6, 6, 1, "bert")
    assert "no lm_head" in encoder and "head 0" not in encoder
    decoder = hydra_svg(4, 4, 1, "llama")
    assert "lm_head" in decoder and "(shared)" not in decoder and "head 0" not in decoder
    split = hydra_svg(4, 2, 3, "llama")
    assert "head 2: layers 2-3" in split and "lm_head (shared)" in split


def test_device_is_shown_and_an_old_run_says_it_was_not_recorded(write_run, tmp_path):
    old = build_report(write_run(tmp_path / "old"))[0]
    assert "<dt>device</dt><dd>not recorded" in old
    run = write_run(tmp_path / "new")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["model"]["device"] = "cuda:0"
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert "<dt>device</dt><dd>cuda:0</dd>" in build_report(run)[0]


def test_recorded_tokens_label_attention_samples_and_top_predictions(write_run, tmp_path):
    run = write_run(tmp_path / "run")
    text = "Hello <b>world</b>"
    ids = [257] + [ord(c) for c in text][:9]  # the synthetic samples have 5-10 tokens
    _edit_manifest(run, data__preview={
        "samples": [{"index": 0, "line": 1, "text": text, "ids": ids}], "pieces": PIECES})
    html = build_report(run)[0]
    data = json.loads(re.search(r'id="attn-data"[^>]*>(.*?)</script>', html, re.DOTALL)
                      .group(1))
    full = next(p for p in data if p["full"])
    first = full["maps"][0]
    assert first["tokens"][:4] == ["<bos>", "H", "e", "l"] and first["sample"].startswith(
        "sample 0: Hello")
    assert "<b>" not in re.search(r'id="attn-data"[^>]*>(.*?)</script>', html,
                                  re.DOTALL).group(1)  # markup escaped inside the JSON
    run_section = _section(html, "run")
    assert "<td>Hello &lt;b&gt;world&lt;/b&gt;</td>" in run_section  # the samples table
    assert "&lt;bos&gt; H e l l o ␣" in run_section
