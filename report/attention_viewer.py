"""The attention viewer: one attention map at a time, with token labels and a colorbar,
chosen with selectors for the layer (and Hydra head), the attention head and the sample.

The page stays one self-contained file: the maps travel inside it as JSON (each map's
weights quantized to bytes, base64, with its largest value for the colorbar) in a
`<script type="application/json">`, and one small inline script draws the chosen map as
SVG. Every user string (token text, labels) is JSON-escaped (`<` as `\\u003c`) and reaches
the page only through `textContent`, never as markup. Both script elements carry
`data-expc` so a test can tell the report's own scripts from anything else.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import attrs
import torch

from expc.report.html_parts import esc

LEVELS = 255  # a map's weights are stored as bytes: value = byte / LEVELS * vmax


@attrs.frozen(kw_only=True)
class AttentionMap:
    """One sample's attention at one place: `[A, L_q, L_k]` (full) or `[A, L_k]` (received
    by each key, reduced over queries), with the tokens of its positions."""

    sample: str  # the selector's label: "sample 3: The quick..." or "whole run"
    tokens: Sequence[str]  # one label per position
    weights: torch.Tensor  # [A, L, L] or [A, L], float


@attrs.frozen(kw_only=True)
class AttentionPlace:
    """Every map of one captured pattern (a layer, maybe in a Hydra head)."""

    place: str  # "layer 1", "head 2 layer 3"
    full: bool  # query x key maps (else keys only: attention head x key)
    maps: Sequence[AttentionMap]


def _encode(item: AttentionMap) -> dict:
    weights = item.weights.double()
    vmax = float(weights.max()) if weights.numel() else 0.0
    scaled = (weights / vmax * LEVELS) if vmax > 0 else torch.zeros_like(weights)
    data = scaled.round().clamp(0, LEVELS).to(torch.uint8).numpy().tobytes()
    return {"sample": item.sample, "tokens": list(item.tokens), "heads": weights.shape[0],
            "vmax": vmax, "data": base64.b64encode(data).decode("ascii")}


def _json(places: Sequence[AttentionPlace]) -> str:
    payload = [{"place": p.place, "full": p.full, "maps": [_encode(m) for m in p.maps]}
               for p in places]
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).replace(
        "<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


SCRIPT = r"""
(function () {
  var root = document.getElementById("attn-viewer");
  var places = JSON.parse(document.getElementById("attn-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var STOPS = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
               [245, 125, 21], [250, 193, 39], [252, 255, 164]];  // magma
  function color(t) {
    var x = Math.max(0, Math.min(1, t)) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2);
    var f = x - i, a = STOPS[i], b = STOPS[i + 1], c = [0, 1, 2].map(function (k) {
      return Math.round(a[k] + (b[k] - a[k]) * f); });
    return "rgb(" + c.join(",") + ")";
  }
  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function fmt(v) {
    if (v === 0) { return "0"; }
    return Math.abs(v) < 1e-4 ? v.toExponential(1) : String(Number(v.toPrecision(3)));
  }
  function bytes(b64) {
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out;
  }
  function fill(select, labels) {
    select.textContent = "";
    labels.forEach(function (label, i) {
      var option = document.createElement("option");
      option.value = String(i); option.textContent = label; select.appendChild(option);
    });
  }
  var pick = {place: root.querySelector("[data-pick=place]"),
              head: root.querySelector("[data-pick=head]"),
              sample: root.querySelector("[data-pick=sample]")};
  var out = root.querySelector(".attn-map");
  fill(pick.place, places.map(function (p) { return p.place; }));
  function refill() {
    var place = places[+pick.place.value];
    fill(pick.sample, place.maps.map(function (m) { return m.sample; }));
    var heads = place.maps.length ? place.maps[0].heads : 0, labels = [];
    for (var h = 0; h < heads; h++) { labels.push("attention head " + h); }
    fill(pick.head, place.full ? labels : ["every head (rows)"]);
    pick.head.disabled = !place.full;
    draw();
  }
  function draw() {
    var place = places[+pick.place.value], map = place.maps[+pick.sample.value];
    out.textContent = "";
    if (!map) { return; }
    var data = bytes(map.data), n = map.tokens.length;
    var rows = place.full ? n : map.heads, cols = n;
    var offset = place.full ? (+pick.head.value) * n * n : 0;
    var rowLabels = place.full ? map.tokens : map.tokens.slice(0, 0);
    if (!place.full) { for (var h = 0; h < map.heads; h++) { rowLabels.push("head " + h); } }
    var cell = Math.max(8, Math.min(22, Math.floor(720 / Math.max(rows, cols))));
    var longest = Math.max.apply(null, map.tokens.map(function (t) { return Math.min(t.length, 14); }));
    var left = 130, top = 30, bottom = 36 + longest * 6, bar = 110;
    var width = left + cols * cell + bar, height = top + rows * cell + bottom;
    var svg = el("svg", {width: width, height: height, viewBox: "0 0 " + width + " " + height,
                         role: "img", "font-size": Math.min(12, cell), "font-family": "sans-serif"});
    svg.appendChild(el("text", {x: left, y: 18, "font-size": 13},
      place.place + (place.full ? ", " + pick.head.options[pick.head.selectedIndex].text : "") +
      ", " + map.sample));
    for (var r = 0; r < rows; r++) {
      for (var c = 0; c < cols; c++) {
        var v = data[offset + r * cols + c] / 255;
        var rect = el("rect", {x: left + c * cell, y: top + r * cell, width: cell, height: cell,
                               fill: color(v)});
        rect.appendChild(el("title", {}, rowLabels[r] + " → " + map.tokens[c] + ": " + fmt(v * map.vmax)));
        svg.appendChild(rect);
      }
      svg.appendChild(el("text", {x: left - 4, y: top + (r + 0.7) * cell, "text-anchor": "end"},
                         rowLabels[r]));
    }
    for (var k = 0; k < cols; k++) {
      var x = left + (k + 0.6) * cell, y = top + rows * cell + 4;
      svg.appendChild(el("text", {x: x, y: y, "text-anchor": "end",
                                  transform: "rotate(-60 " + x + " " + y + ")"}, map.tokens[k]));
    }
    svg.appendChild(el("text", {x: left + cols * cell / 2, y: height - 6, "text-anchor": "middle",
                                "font-size": 12}, place.full ? "key (attended-to token)" : "key token"));
    svg.appendChild(el("text", {x: 14, y: top + rows * cell / 2, "text-anchor": "middle",
                                "font-size": 12, transform: "rotate(-90 14 " + (top + rows * cell / 2) + ")"},
                       place.full ? "query token" : "attention head"));
    var bx = left + cols * cell + 16, bh = Math.max(80, rows * cell), steps = 32;
    for (var s = 0; s < steps; s++) {
      svg.appendChild(el("rect", {x: bx, y: top + bh * (1 - (s + 1) / steps), width: 14,
                                  height: bh / steps + 0.5, fill: color((s + 0.5) / steps)}));
    }
    [0, 0.5, 1].forEach(function (t) {
      svg.appendChild(el("text", {x: bx + 18, y: top + bh * (1 - t) + 4, "font-size": 11},
                         fmt(t * map.vmax)));
    });
    svg.appendChild(el("text", {x: bx + 8, y: top + bh + 18, "text-anchor": "middle",
                                "font-size": 11}, "weight"));
    out.appendChild(svg);
  }
  pick.place.addEventListener("change", refill);
  pick.head.addEventListener("change", draw);
  pick.sample.addEventListener("change", draw);
  refill();
})();
"""


def viewer_html(places: Sequence[AttentionPlace]) -> str:
    """The viewer: selectors, the drawing area, the maps as JSON and the script."""
    return (
        '<figure id="attn-viewer" class="attn-viewer">'
        '<label>layer <select data-pick="place"></select></label> '
        '<label>attention head <select data-pick="head"></select></label> '
        '<label>sample <select data-pick="sample"></select></label>'
        '<div class="attn-map"></div>'
        "<noscript>" + esc("The attention viewer needs JavaScript.") + "</noscript>"
        "<figcaption>Attention weights of one sample at one layer; rows: queries (or "
        "attention heads, for a pattern reduced over queries), columns: keys.</figcaption>"
        "</figure>"
        f'<script type="application/json" id="attn-data" data-expc="attention-data">'
        f"{_json(places)}</script>"
        f'<script data-expc="attention-viewer">{SCRIPT}</script>'
    )
