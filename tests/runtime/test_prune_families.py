"""`expc prune` on Qwen3, Gemma 2 and Gemma 3 (text) against Hugging Face itself.

A scrambled tiny checkpoint of each is scored by a real `expc run` (channel_contribution at
`mlp.down_proj`, kv_head_contribution at `self_attn.o_proj`, block_influence at `layers`).
The pruned folder loads with `transformers` and with expc and gives the original's logits
with the same units zeroed by forward hooks (or the same layers passing their input
through). What these families add over Llama: Qwen3's and Gemma 3's `q_norm`/`k_norm` are
per head (`[head_dim]` weights shared by every head), so they stay whole when KV heads go;
Gemma's `head_dim` is explicit (not `hidden_size / heads`) and `query_pre_attn_scalar`
scales the scores, both unchanged by pruning; Gemma's layers alternate sliding and global
attention, and `layer_types` keeps each kept layer's kind.
"""

from __future__ import annotations

import json

import pytest
import torch

from expc.models.loading import load_model
from expc.models.registry import architecture_named, read_config
from expc.runtime.prune.export import PruneRequest, prune
from expc.spec.model_shape import ARCHITECTURES
from prune_support import assert_pruned, build, prune_weakest_layer, scoring_run, tensors

pytestmark = pytest.mark.slow

FAMILIES = ("qwen3", "gemma2", "gemma3_text")
PER_HEAD_QK_NORM = ("qwen3", "gemma3_text")
STATEMENTS = """
    importance channel_contribution at mlp.down_proj[*]
    importance kv_head_contribution at self_attn.o_proj[*]
    importance block_influence at layers[*]"""


@pytest.fixture(scope="module", params=FAMILIES)
def scored(request, tmp_path_factory):
    family = request.param
    folder = tmp_path_factory.mktemp(family)
    hf = build(family, folder / "ckpt")
    run = scoring_run(folder, folder / "ckpt", hf.config.vocab_size, statements=STATEMENTS)
    return family, hf, folder, run


def _config(folder):
    return json.loads((folder / "config.json").read_text())


def test_neurons(scored):
    family, hf, folder, run = scored
    out = folder / "neurons"
    result = prune(PruneRequest(run=run, metric="channel_contribution", out=out, fraction=0.25))
    assert _config(out)["intermediate_size"] == 36 == result.selection.kept
    assert_pruned(hf, family, out, result.provenance)


def test_kv_heads(scored):
    family, hf, folder, run = scored
    out = folder / "kv"
    result = prune(PruneRequest(run=run, metric="kv_head_contribution", out=out, keep=1))
    config, source = _config(out), _config(folder / "ckpt")
    assert (config["num_key_value_heads"], config["num_attention_heads"]) == (1, 2)
    assert config["head_dim"] == 16 and result.provenance["exact"] is True
    assert config.get("query_pre_attn_scalar") == source.get("query_pre_attn_scalar")
    before, after = tensors(folder / "ckpt"), tensors(out)
    assert after["model.layers.0.self_attn.o_proj.weight"].shape == (32, 2 * 16)
    assert after["model.layers.0.self_attn.k_proj.weight"].shape == (16, 32)
    if family in PER_HEAD_QK_NORM:  # shared by every head: kept whole
        assert ARCHITECTURES[family].qk_norm == "per_head"
        for layer in range(4):
            for norm in ("q_norm", "k_norm"):
                key = f"model.layers.{layer}.self_attn.{norm}.weight"
                assert torch.equal(after[key], before[key]) and after[key].shape == (16,)
    assert_pruned(hf, family, out, result.provenance)


def test_layers(scored):
    family, hf, folder, run = scored
    out = folder / "layers"
    result, gone = prune_weakest_layer(run, out, layers=4)
    config, source = _config(out), _config(folder / "ckpt")
    assert config["num_hidden_layers"] == 3
    if "layer_types" in source:  # Gemma: each kept layer keeps its window
        assert config["layer_types"] == [kind for layer, kind in enumerate(source["layer_types"])
                                         if layer != gone]
    assert load_model(out).config.sliding_windows == tuple(
        window for layer, window in enumerate(load_model(folder / "ckpt").config.sliding_windows)
        if layer != gone)
    assert_pruned(hf, family, out, result.provenance)


@pytest.mark.parametrize("family", [name for name, facts in ARCHITECTURES.items()
                                    if facts.qk_norm is not None])
def test_the_qk_norm_fact_is_the_models_own(family):
    """`ArchitectureFacts.qk_norm`, which decides whether pruning cuts `q_norm`/`k_norm`, is
    what the family's block builds: a `[head_dim]` weight per head, or the whole projection."""
    raw = dict(model_type=family, vocab_size=61, hidden_size=32, intermediate_size=48,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    with torch.device("meta"):
        attention = architecture_named(family).build_block(
            read_config(raw, source="test"), 0, None).self_attn
    per_head = ARCHITECTURES[family].qk_norm == "per_head"
    assert attention.q_norm.weight.shape == ((16,) if per_head else (4 * 16,))
    assert attention.k_norm.weight.shape == ((16,) if per_head else (2 * 16,))
