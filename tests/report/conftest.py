"""Synthetic run folders for the report and diff tests (and `bench/bench_report.py`).

The runtime that writes run folders is built elsewhere, so these tests write their own, after
docs/run-folder.md and the key names of contracts §3: a Hydra run (trunk + heads) with mean
captures at every layer, a `full` capture with its mask, an `as`-named capture in the heads,
an attention pattern, all five importance metrics with their extra fields and the meta keys;
optionally interventions and effects (contracts §4, §5), given as the IR nodes `intervene`
and `effect` write (`spec.to_json`'s form), with their stored keys and manifest entries.
`write_run` is deterministic: the same arguments give byte-identical results.
"""

from __future__ import annotations

import hashlib
import json
import math
import types
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

SPEC_TEMPLATE = """\
# A synthetic Hydra run for the report tests.
experiment synthetic {{
    model  = "{model}"
    dtype  = float32
    hydra {{ trunk = {trunk}  heads = {heads} }}
    data {{
        source     = jsonl("{source}", field = "text")
        batch_size = 4
    }}
    capture resid_out[*]                            {{ aggregate = mean(mask = attention) }}
    capture mlp_out[0]                              {{ aggregate = dataset_mean }}
    capture attn_out[1]                             {{ aggregate = full }}
    capture attn_pattern[1]                         {{ aggregate = full }}
    capture attn_pattern[0]                         {{ aggregate = mean }}
    capture resid_out[-1] of heads[*] as resid_last {{ aggregate = mean(mask = last) }}
    importance l2_norm                at mlp.down_proj[*]
    importance channel_contribution   at mlp.down_proj[*]
    importance kv_head_contribution   at self_attn.o_proj[*]
    importance layernorm_contribution at post_attention_layernorm[*]
    importance iterative_channel      at mlp.down_proj[-1] {{ iterations = 4 }}
    output {{ dir = "runs/synthetic" }}
}}
"""


def _module_path(layer: int, trunk: int, head: int, module: str) -> tuple[str, int | None]:
    """The key's module path and head for a module at a global layer (contracts §3)."""
    if layer < trunk:
        return f"layers.{layer}.{module}", None
    return f"head{head}/layers.{layer}.{module}", head


class _Builder:
    """Collects tensors with their manifest entries."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.entries: dict[str, dict] = {}

    def add(self, key: str, value: torch.Tensor, meaning: str, **fields) -> None:
        self.tensors[key] = value.clone().contiguous()
        self.entries[key] = {"shape": list(value.shape), "dtype": str(value.dtype).split(".")[1],
                             "meaning": meaning, **fields}


def _captures(b: _Builder, g: torch.Generator, *, n_layers: int, trunk: int, heads: int,
              hidden: int, samples: int, seq: int, attn_heads: int) -> None:
    lengths = torch.randint(seq // 2, seq + 1, (samples,), generator=g)  # [N]
    lengths[0] = seq
    mask = torch.arange(seq)[None, :] < lengths[:, None]  # [N, S]
    b.add("meta/sample_index", torch.arange(samples), "index of each sample in data order",
          kind="meta")
    b.add("meta/token_count", lengths.to(torch.int64), "non-padding tokens per sample",
          kind="meta")

    def capture(key, value, site, name, layer, head, aggregate, mask_name):
        where = "" if layer is None else f" at layer {layer}"
        where += "" if head is None else f", head {head}"
        b.add(key, value, f"{aggregate} of {site}{where}", kind="capture", site=site, name=name,
              layer=layer, head=head, aggregate=aggregate, mask=mask_name)

    state = torch.randn(samples, hidden, generator=g)  # [N, H]
    capture("capture/embed", state, "embed", "embed", None, None, "mean", "attention")
    paths = {}
    for layer in range(n_layers):
        branches = [None] if layer < trunk else list(range(heads))
        for head in branches:
            previous = state if head is None else paths.get(head, state)
            update = 0.3 * torch.randn(samples, hidden, generator=g)  # [N, H]
            current = 1.1 * previous + update
            if head is None:
                state = current
                key = f"capture/resid_out_{layer}"
            else:
                paths[head] = current
                key = f"capture/head{head}/resid_out_{layer}"
            capture(key, current, "resid_out", "resid_out", layer, head, "mean", "attention")
    finals = paths if paths else {None: state}  # no split: the trunk is the only path
    for head, final in finals.items():
        prefix = "" if head is None else f"head{head}/"
        last = final + 0.05 * torch.randn(samples, hidden, generator=g)  # [N, H]
        capture(f"capture/{prefix}resid_last_{n_layers - 1}", last, "resid_out",
                "resid_last", n_layers - 1, head, "mean", "last")
        normed = final / final.norm(dim=-1, keepdim=True)  # [N, H]
        capture(f"capture/{prefix}final_norm", normed, "final_norm", "final_norm", None,
                head, "mean", "attention")

    moments = torch.randn(2, hidden, generator=g)  # [2, H]
    capture("capture/mlp_out_0", moments[0], "mlp_out", "mlp_out", 0, None, "dataset_mean",
            "attention")
    capture("capture/mlp_out_0.var", moments[1].abs(), "mlp_out", "mlp_out", 0, None,
            "dataset_mean", "attention")
    full = torch.randn(samples, seq, hidden, generator=g) * mask[..., None]  # [N, S, H]
    capture("capture/attn_out_1", full, "attn_out", "attn_out", 1, None, "full", None)
    b.add("capture/attn_out_1.mask", mask, "attention mask of the full capture attn_out_1",
          kind="capture", site="attn_out", name="attn_out", layer=1, head=None,
          aggregate="full", mask=None)
    scores = torch.randn(samples, attn_heads, seq, seq, generator=g)  # [N, A, S_q, S_k]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()  # [S, S]
    allowed = causal[None, None] & mask[:, None, None, :]  # [N, 1, S, S]
    pattern = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    capture("capture/attn_pattern_1", pattern, "attn_pattern", "attn_pattern", 1, None, "full",
            None)  # [N, A, S_q, S_k], as contracts §3 stores a full pattern
    received = pattern.mean(dim=2)  # [N, A, S_k]: reduced over queries
    capture("capture/attn_pattern_0", received, "attn_pattern", "attn_pattern", 0, None,
            "mean", "attention")
    b.add("capture/attn_pattern_1.mask", mask, "attention mask of the full capture attn_pattern_1",
          kind="capture", site="attn_pattern", name="attn_pattern", layer=1, head=None,
          aggregate="full", mask=None)


def _importance(b: _Builder, g: torch.Generator, *, n_layers: int, trunk: int, heads: int,
                hidden: int, intermediate: int, kv_heads: int) -> None:
    def metric(name, layer, module, fields):
        for head in ([None] if layer < trunk else range(heads)):
            path, key_head = _module_path(layer, trunk, 0 if head is None else head, module)
            for field, value in fields().items():
                b.add(f"importance/{name}/{path}/{field}", value,
                      f"{field} of {name} at {path}", kind="importance", metric=name,
                      module=path, layer=layer, head=key_head, field=field)

    def positive(size):
        return torch.rand(size, generator=g) * 2 + 0.01

    for layer in range(n_layers):
        metric("l2_norm", layer, "mlp.down_proj", lambda: {"score": positive(intermediate)})

        def contribution():
            weight_norm, activation = positive(intermediate), positive(intermediate)
            return {"score": weight_norm * activation, "weight_norm": weight_norm,
                    "activation_mean_abs": activation}

        metric("channel_contribution", layer, "mlp.down_proj", contribution)
        metric("kv_head_contribution", layer, "self_attn.o_proj",
               lambda: {"score": positive(kv_heads)})
        metric("layernorm_contribution", layer, "post_attention_layernorm",
               lambda: {"score": positive(hidden)})

    def iterative():
        order = torch.randperm(intermediate, generator=g)  # ascending importance
        rank = torch.empty(intermediate, dtype=torch.int64)
        rank[order] = torch.arange(intermediate)
        return {"score": rank, "channels_importance_ascending": order}

    metric("iterative_channel", n_layers - 1, "mlp.down_proj", iterative)


def _selector(indices: Sequence[int] | str | None) -> str | None:
    """Indices as an IR selector's text (`1, 3`); a string is taken as written (`*`, `1:`)."""
    if indices is None or isinstance(indices, str):
        return indices
    return ", ".join(str(i) for i in indices)


def intervene(target: str, layers, heads=None, *, operation: str = "zero",
              target_kind: str = "site", channels: Sequence[int] | None = None,
              run: str | None = None) -> dict:
    """An `intervene` node as the manifest's `ir.interventions` holds it; `layers` and
    `heads` are lists of indices (or selector text)."""
    return {"target": target, "target_kind": target_kind, "layers": _selector(layers),
            "heads": _selector(heads),
            "operation": {"kind": operation, "run": run, "key": None,
                          "scale": 2.0 if operation == "scale" else None},
            "channels": None if channels is None else {
                "kind": "list", "indices": list(channels), "run": None, "metric": None,
                "fraction": None, "count": None, "seed": 0},
            "positions": {"kind": "all", "indices": [], "field": None}}


def effect(metric: str, heads=None, *, reference: int | None = None,
           name: str | None = None) -> dict:
    """An `effect` node as the manifest's `ir.effects` holds it."""
    return {"metric": metric, "heads": _selector(heads), "reference": reference, "name": name,
            "mask": None, "at_site": None, "at_layer": None, "aggregate": None,
            "correct": None, "wrong": None}


def mean_ci95(values: torch.Tensor) -> tuple[float, list[float]]:
    """The manifest's `mean` and `ci95` of `values`, written out in float64."""
    x = [float(v) for v in values.double()]
    n = len(x)
    mean = sum(x) / n
    s = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    return mean, [mean - 1.96 * s / math.sqrt(n), mean + 1.96 * s / math.sqrt(n)]


def _resolve(text: str | None, n: int) -> list[int | None]:
    """The test's own reading of the selectors it writes: `*`, `a:` or `1, 3`."""
    if text is None:
        return [None]
    if text == "*":
        return list(range(n))
    if text.endswith(":"):
        return list(range(int(text[:-1]), n))
    return [int(i) for i in text.split(",")]


def _interventions(b: _Builder, nodes: Sequence[dict], *, n_layers: int, heads: int,
                   hidden: int) -> None:
    for node in nodes:
        for head in _resolve(node["heads"], heads):
            for layer in _resolve(node["layers"], n_layers):
                channels = (torch.tensor(node["channels"]["indices"]) if node["channels"]
                            else torch.arange(hidden))
                where = f"{node['target']} at layer {layer}" + (
                    "" if head is None else f", head {head}")
                prefix = "" if head is None else f"head{head}/"
                b.add(f"intervention/{prefix}{node['target']}_{layer}/channels",
                      channels.to(torch.int64), f"{node['operation']['kind']} of {where}",
                      kind="intervention", target=node["target"], layer=layer, head=head,
                      field="channels", operation=node["operation"]["kind"], units="channels")


def _effects(b: _Builder, g: torch.Generator, nodes: Sequence[dict], *, heads: int,
             samples: int) -> None:
    for node in nodes:
        name = node["name"] or node["metric"]
        for head in _resolve(node["heads"], heads):
            if head is not None and head == node["reference"]:
                continue
            level = 0.1 * (1 + (head or 0))
            values = (level + 0.05 * torch.randn(samples, generator=g)).abs().float()  # [N]
            mean, ci95 = mean_ci95(values)
            vs = "" if node["reference"] is None else f" vs head {node['reference']}"
            b.add(f"effect/{name}" + ("" if head is None else f"/head{head}"), values,
                  f"{node['metric']} of head {head}{vs}, per sample",
                  kind="effect", metric=node["metric"], name=name, head=head,
                  reference=node["reference"], mean=mean, ci95=ci95)


def write_run(path: Path, *, status: str = "complete", n_layers: int = 4, trunk: int = 2,
              heads: int = 3, hidden: int = 32, intermediate: int = 64, samples: int = 6,
              seq: int = 10, attn_heads: int = 4, kv_heads: int = 2, seed: int = 0,
              model_path: str = "builtin:tiny-llama",
              source: str = "examples/data/prompts.jsonl", spec_path: str = "synthetic.exp",
              error_message: str = "data line 3: missing field `text`",
              interventions: Sequence[dict] = (), effects: Sequence[dict] = (),
              edit: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Path:
    """Write a synthetic run folder at `path` and return it.

    `status="running"` writes only the manifest (no results yet); `"failed"` writes the
    results gathered so far and an error. `interventions` and `effects` are IR nodes
    (`intervene`, `effect`): each writes its keys with random but deterministic values, and
    the manifest's `ir` holds the nodes. `edit` may change the tensors before they are
    written (perturb, drop, add keys); the manifest follows what is written.
    """
    g = torch.Generator().manual_seed(seed)
    b = _Builder()
    _captures(b, g, n_layers=n_layers, trunk=trunk, heads=heads, hidden=hidden,
              samples=samples, seq=seq, attn_heads=attn_heads)
    _importance(b, g, n_layers=n_layers, trunk=trunk, heads=heads, hidden=hidden,
                intermediate=intermediate, kv_heads=kv_heads)
    _interventions(b, interventions, n_layers=n_layers, heads=heads, hidden=hidden)
    _effects(b, g, effects, heads=heads, samples=samples)
    if edit is not None:
        edit(b.tensors)
    for key in list(b.entries):
        if key not in b.tensors:
            del b.entries[key]
    for key, value in b.tensors.items():
        b.entries.setdefault(key, {"kind": key.partition("/")[0], "meaning": "added by a test"})
        b.entries[key].update(shape=list(value.shape), dtype=str(value.dtype).split(".")[1])

    spec_text = SPEC_TEMPLATE.format(model=model_path, source=source, trunk=trunk, heads=heads)
    tokens = int(b.tensors["meta/token_count"].sum()) if "meta/token_count" in b.tensors else 0
    manifest = {
        "format": "expc-run/1",
        "status": status,
        "error": ({"message": error_message, "diagnostics": []} if status == "failed"
                  else None),
        "spec": {"path": spec_path, "text": spec_text,
                 "sha256": hashlib.sha256(spec_text.encode()).hexdigest()},
        "ir": {"name": "synthetic", "interventions": list(interventions),
               "effects": list(effects)},
        "model": {"path": model_path, "architecture": "llama",
                  "config": {"hidden_size": hidden, "num_hidden_layers": n_layers,
                             "num_attention_heads": attn_heads,
                             "num_key_value_heads": kv_heads,
                             "intermediate_size": intermediate},
                  "n_layers": n_layers, "hydra": {"trunk": trunk, "heads": heads}},
        "data": {"source": f'jsonl("{source}", field="text")', "samples": samples,
                 "tokens": tokens, "batches": (samples + 3) // 4},
        "versions": {"expc": "0.1.0", "torch": torch.__version__, "python": "3.11"},
        "timings": {"started": "2026-11-23T22:00:00+00:00",
                    "finished": None if status == "running" else "2026-11-23T22:00:03+00:00",
                    "seconds": {"load": 0.5, "compile": 0.25, "run": 2.0, "total": 2.75},
                    "tokens_per_s": tokens / 2.0, "samples_per_s": samples / 2.0},
        "checkpoint": ({"dir": "checkpoint", "batches_done": 1} if status != "complete"
                       else None),
        "tensors": {} if status == "running" else b.entries,
    }
    path.mkdir(parents=True, exist_ok=True)
    if status != "running":
        save_file({k: v.contiguous() for k, v in b.tensors.items()},
                  str(path / "results.safetensors"))
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


class PageParser(HTMLParser):
    """What the tests check in a report: sections with their figures (and what they show:
    figures, tables, the attention viewer), every URL attribute, script elements other than
    the report's own attention viewer (`data-expc`), and the page's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, int] = {}  # section id -> number of <figure>s
        self.exhibits: dict[str, int] = {}  # section id -> number of figures and tables
        self.urls: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self._section = values.get("id") or ""
            self.sections[self._section] = 0
            self.exhibits[self._section] = 0
        elif tag == "figure" and self._section is not None:
            self.sections[self._section] += 1
            self.exhibits[self._section] += 1
        elif tag == "table" and self._section is not None:
            self.exhibits[self._section] += 1
        elif tag == "script" and "data-expc" not in values:
            self.scripts += 1
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "srcset") and value:
                self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture
def page_parser():
    """`parse_page(html) -> PageParser`."""
    return parse_page


@pytest.fixture(name="write_run", scope="session")
def _write_run_fixture():
    """`write_run(path, **options)` for tests (fixtures rather than imports of conftest)."""
    return write_run


@pytest.fixture(name="ir_nodes", scope="session")
def _ir_nodes_fixture():
    """`ir_nodes.intervene(...)` and `ir_nodes.effect(...)`: IR nodes for `write_run`."""
    return types.SimpleNamespace(intervene=intervene, effect=effect)
