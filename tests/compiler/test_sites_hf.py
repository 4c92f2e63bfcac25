"""The finer capture sites (contracts §6) against Hugging Face models read with hooks.

Each tiny random HF model is saved and loaded by our loader with a Hydra split (a 1-layer
trunk, two heads reading the same weights), compiled with a `full` capture of every new
site at every layer of every head, and run once. The reference values come from the HF
model's own modules through hooks: `mlp_post` is the input of the down projection, `q`/`k`
the projections (after OLMo2's QK-norm) rotated with HF's own `apply_rotary_pos_emb` and
rotary tables, `v` the value projection, `z` the input of the output projection (all split
into heads, `[B, S, n, d]`), and `lens` HF's final norm and LM head on each layer's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from compiler_support import tiny_hf_bert, Recorder, capture, intervention, plan_of
from expc.compiler.pipeline import compile_plan
from expc.models.hydra_split import HydraSplit
from expc.models.loading import load_model
from expc.runtime.intervene.facts import ModelFacts
from expc.spec import ir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from hf_reference import VOCAB, hf_model, save  # noqa: E402

ATOL = 1e-5
LAYOUT = HydraSplit(n_layers=3, trunk=1, n_heads=2)
DECODER_SITES = ("mlp_post", "q", "k", "v", "z", "lens")
ENCODER_SITES = ("mlp_post", "q", "k", "v", "z")


def _ids() -> torch.Tensor:
    return torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))


def _places():
    for layer in range(LAYOUT.n_layers):
        yield from ((layer, head) for head in LAYOUT.heads_of_layer(layer, None))


def _ours(model, sites, ids) -> dict[tuple[str, int, int | None], torch.Tensor]:
    """(site, layer, head) -> the value our compiled model hands to its `full` sink."""
    entries = [capture(site, layer, head) for layer, head in _places() for site in sites]
    plan = plan_of(*entries, layout=LAYOUT)
    recorder = Recorder(plan)
    with torch.no_grad():
        compile_plan(plan, model, recorder.sinks).graph_module(ids, torch.ones_like(ids))
    return {(e.site, e.layer, e.head): recorder.one(e.key)[0] for e in entries}


class _Hooks:
    """Forward hooks keeping module outputs (or inputs) by name, removed on exit."""

    def __init__(self):
        self.seen: dict[str, object] = {}
        self.handles = []

    def output(self, module, name: str) -> None:
        self.handles.append(module.register_forward_hook(
            lambda m, args, out: self.seen.__setitem__(name, out)))

    def input(self, module, name: str) -> None:
        self.handles.append(module.register_forward_pre_hook(
            lambda m, args: self.seen.__setitem__(name, args[0])))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:  # [B, S, n*d] -> [B, S, n, d]
    return x.view(*x.shape[:2], -1, head_dim)


def _hf_decoder_sites(hf, ids) -> dict[tuple[str, int], torch.Tensor]:
    d = hf.config.head_dim if getattr(hf.config, "head_dim", None) else (
        hf.config.hidden_size // hf.config.num_attention_heads)
    with _Hooks() as hooks:
        hooks.output(hf.model.rotary_emb, "rotary")
        for L, layer in enumerate(hf.model.layers):
            attn = layer.self_attn
            hooks.input(layer.mlp.down_proj, f"mlp_post{L}")
            hooks.output(getattr(attn, "q_norm", None) or attn.q_proj, f"q{L}")
            hooks.output(getattr(attn, "k_norm", None) or attn.k_proj, f"k{L}")
            hooks.output(attn.v_proj, f"v{L}")
            hooks.input(attn.o_proj, f"z{L}")
            hooks.output(layer, f"resid_out{L}")
        with torch.no_grad():
            hf(input_ids=ids)
            seen = hooks.seen
            cos, sin = seen["rotary"]
            want = {}
            for L in range(hf.config.num_hidden_layers):
                q, k = (_heads(seen[f"{s}{L}"], d).transpose(1, 2) for s in ("q", "k"))
                q, k = apply_rotary_pos_emb(q, k, cos, sin)  # [B, n, S, d]
                resid = seen[f"resid_out{L}"]
                resid = resid[0] if isinstance(resid, tuple) else resid
                want |= {("mlp_post", L): seen[f"mlp_post{L}"], ("q", L): q.transpose(1, 2),
                         ("k", L): k.transpose(1, 2), ("v", L): _heads(seen[f"v{L}"], d),
                         ("z", L): _heads(seen[f"z{L}"], d),
                         ("lens", L): hf.lm_head(hf.model.norm(resid))}
    return want


def _compare(got: dict, want: dict, sites, label: str) -> None:
    for (site, layer, head), value in got.items():
        torch.testing.assert_close(value, want[site, layer], atol=ATOL, rtol=0,
                                   msg=f"{label} {site}[{layer}] head {head}")
    assert {(s, L) for s, L, _ in got} == {(s, L) for s in sites for L in range(3)}


@pytest.mark.parametrize("family", ["llama", "qwen2", "olmo2"])
def test_decoder_sites_match_hugging_face(family, tmp_path):
    hf = hf_model(family)
    ours = load_model(save(hf, tmp_path), hydra=ir.Hydra(trunk=LAYOUT.trunk, heads=LAYOUT.n_heads))
    ids = _ids()
    _compare(_ours(ours, DECODER_SITES, ids), _hf_decoder_sites(hf, ids), DECODER_SITES, family)


def test_lens_of_the_last_layer_is_the_logits(tmp_path):
    """lens[L] = lm_head(norm(hidden_states[L + 1])): at the last layer, the model's logits."""
    hf = hf_model("llama")
    ours = load_model(save(hf, tmp_path))
    ids = _ids()
    plan = plan_of(capture("lens", 2), layout=HydraSplit.single(3))
    recorder = Recorder(plan)
    with torch.no_grad():
        compile_plan(plan, ours, recorder.sinks).graph_module(ids, torch.ones_like(ids))
        hidden = hf(input_ids=ids, output_hidden_states=True)
    torch.testing.assert_close(recorder.one(plan.keys[0])[0], hidden.logits, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    hf = tiny_hf_bert()
    folder = tmp_path_factory.mktemp("bert")
    hf.save_pretrained(folder)
    return hf, load_model(folder, hydra=ir.Hydra(trunk=LAYOUT.trunk, heads=LAYOUT.n_heads))


def test_bert_sites_match_hugging_face(bert):
    hf, ours = bert
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(4))
    d = hf.config.hidden_size // hf.config.num_attention_heads
    with _Hooks() as hooks:
        for L, layer in enumerate(hf.encoder.layer):
            attn = layer.attention
            hooks.input(layer.output.dense, f"mlp_post{L}")
            for site, module in (("q", attn.self.query), ("k", attn.self.key),
                                 ("v", attn.self.value)):
                hooks.output(module, f"{site}{L}")
            hooks.input(attn.output.dense, f"z{L}")
        with torch.no_grad():
            hf(input_ids=ids)
    want = {(site, L): (value if site == "mlp_post" else _heads(value, d))
            for key, value in hooks.seen.items() for site, L in [(key[:-1], int(key[-1]))]}
    _compare(_ours(ours, ENCODER_SITES, ids), want, ENCODER_SITES, "bert")


def test_intervention_widths_agree_with_the_captured_shapes(tmp_path):
    """`ModelFacts.width` (what edits and unit selection count as channels) is each new
    site's captured value with its trailing dims flattened (GQA: k and v have fewer heads)."""
    hf = hf_model("llama")
    ours = load_model(save(hf, tmp_path), hydra=ir.Hydra(trunk=LAYOUT.trunk, heads=LAYOUT.n_heads))
    got = _ours(ours, ENCODER_SITES, _ids())
    facts = ModelFacts.from_model(ours)
    for (site, layer, head), value in got.items():
        width = facts.width(intervention(site, layer, head, layout=LAYOUT))
        assert value[0, 0].numel() == width, (site, value.shape)
    assert got["k", 0, None].shape[2] == hf.config.num_key_value_heads < hf.config.num_attention_heads
