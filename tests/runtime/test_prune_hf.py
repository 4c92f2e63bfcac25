"""`expc prune` on every architecture and unit kind, against Hugging Face itself.

For each family a scrambled tiny checkpoint is scored by a real `expc run`; the pruned
folder must load with `transformers` (`AutoModelForCausalLM` / `AutoModel`) and give the
outputs of the original HF model with the removed units zeroed by forward hooks (neurons:
`down_proj`'s input channels; KV heads: `o_proj`'s input channels of their query heads;
layers: the layer passing its input through), and load with expc's `load_model` to the
same outputs. The fused checkpoints (Phi-3's `qkv_proj`/`gate_up_proj`, GPT-2's Conv1D
`c_attn`, GPT-NeoX's per-head `query_key_value`) are cut through the loader's own parts.
Exceptions are pinned: BERT, GPT-2 and GPT-NeoX cannot lose heads (refused), OLMo2's
whole-width QK-norm makes KV-head pruning close but not equal (said in `expc_prune.json`).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from expc.models.loading import load_model
from expc.runtime.prune.export import PruneRequest, prune
from expc.spec.diagnostics import DiagnosticError
from prune_support import (FAMILIES, FUSED_FAMILIES, assert_equals_zeroed, batch, build,
                           config_field, hf_outputs, layer_run, load_pruned, scoring_run)

ATOL = 2e-5
pytestmark = pytest.mark.slow


HEADS_REFUSED = ("bert", "gpt2", "gpt_neox")


@pytest.fixture(scope="module", params=FAMILIES + FUSED_FAMILIES)
def scored(request, tmp_path_factory):
    family = request.param
    folder = tmp_path_factory.mktemp(family)
    hf = build(family, folder / "ckpt")
    run = scoring_run(folder, folder / "ckpt", hf.config.vocab_size)
    return family, hf, folder, run


def _expc_outputs(folder, ids, mask):
    """The one head's output of expc's model (logits, or BERT's last hidden states)."""
    model = load_model(folder)
    with torch.no_grad():
        return model(ids, mask)[0]


def _check(family, hf, out, provenance, *, exact=True):
    ids, mask = batch(hf.config.vocab_size)
    real = mask.bool()
    pruned = hf_outputs(load_pruned(out, family), ids, mask)
    original = hf_outputs(hf, ids, mask)
    assert not torch.allclose(pruned[real], original[real], atol=1e-3)  # something was removed
    if exact:
        assert_equals_zeroed(hf, family, out, provenance)
    ours = _expc_outputs(out, ids, mask)
    torch.testing.assert_close(ours[real], pruned[real], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("metric", ["channel_contribution", "l2_norm"])
def test_neurons(scored, metric):
    family, hf, folder, run = scored
    out = folder / f"neurons-{metric}"
    result = prune(PruneRequest(run=run, metric=metric, out=out, fraction=0.25))
    field = config_field(family, "intermediate_size")
    width = getattr(hf.config, field)
    assert json.loads((out / "config.json").read_text())[field] == \
        width - round(0.25 * width) == result.selection.kept
    assert (out / "tokenizer.json").read_text() == (folder / "ckpt" / "tokenizer.json").read_text()
    _check(family, hf, out, result.provenance)


def test_kv_heads(scored):
    family, hf, folder, run = scored
    out = folder / "kv"
    request = PruneRequest(run=run, metric="kv_head_contribution", out=out, keep=1)
    if family in HEADS_REFUSED:
        with pytest.raises(DiagnosticError, match="cannot lose attention heads"):
            prune(request)
        assert not out.exists()
        return
    result = prune(request)
    config = json.loads((out / "config.json").read_text())
    groups = hf.config.num_attention_heads // hf.config.num_key_value_heads
    if family == "phi3":  # fused qkv_proj: [q | k | v] of the kept group, still fused
        with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
            shape = handle.get_slice("model.layers.0.self_attn.qkv_proj.weight").get_shape()
        assert shape == [(groups + 2) * config["head_dim"], hf.config.hidden_size]
    assert (config["num_key_value_heads"], config["num_attention_heads"]) == (1, groups)
    assert result.provenance["exact"] is (family != "olmo2")
    _check(family, hf, out, result.provenance, exact=family != "olmo2")


def test_layers(scored):
    family, hf, folder, _ = scored
    run = layer_run(folder / "influence", folder / "ckpt", [0.5, 0.1, 0.9])
    out = folder / "layers"
    result = prune(PruneRequest(run=run, metric="block_influence", out=out, fraction=0.34))
    assert result.provenance["removed_layers"] == [1]
    assert json.loads((out / "config.json").read_text())[
        config_field(family, "num_hidden_layers")] == 2
    _check(family, hf, out, result.provenance)
