"""A pruned checkpoint equals expc's own `intervene` zeroing the same units (fused
checkpoints too), and the
checkpoint-level details: sharded inputs stay sharded, Qwen2's per-layer sliding windows
survive renumbering, Hydra runs prune by the head `--head` names."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import expc
from expc.runtime.prune.export import PruneRequest, prune
from expc.spec.diagnostics import DiagnosticError
from prune_support import assert_equals_zeroed, build, layer_run, scoring_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    hf = build("llama", folder / "ckpt")
    return hf, folder, scoring_run(folder, folder / "ckpt", hf.config.vocab_size)


def _logits_run(folder, model, name, *, body=""):
    spec = folder / f"{name}.exp"
    spec.write_text(f"""
experiment {name} {{
    model = "{model}"
    hydra {{ trunk = 0  heads = 2 }}
    data {{ source = tokens("{folder / 'data.jsonl'}")  batch_size = 2 }}
    {body}
    capture logits {{ aggregate = mean(mask = attention) }}
    output {{ dir = "{folder / name}" }}
}}
""")
    expc.run(spec)
    with safe_open(str(folder / name / "results.safetensors"), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys() if "logits" in key}


@pytest.mark.parametrize("metric,target", [("channel_contribution", "mlp.down_proj"),
                                           ("kv_head_contribution", "self_attn.o_proj")])
def test_pruned_equals_intervene_lowest(llama, metric, target):
    """`intervene TARGET[*] { set = zero, channels = lowest(run, metric, fraction = F) }` in
    head 1 of the original gives the pruned checkpoint's logits (same round(F * D) rule)."""
    hf, folder, run = llama
    out = folder / f"pruned-{metric}"
    prune(PruneRequest(run=run, metric=metric, out=out, fraction=0.5))
    zeroed = _logits_run(folder, folder / "ckpt", f"zeroed_{metric}", body=(
        f"intervene {target}[*] of heads[1] {{ set = zero, channels = lowest(run = \"{run}\", "
        f"metric = {metric}, fraction = 0.5) }}"))
    pruned = _logits_run(folder, out, f"pruned_{metric}_run")
    key = "capture/head1/logits"
    torch.testing.assert_close(pruned[key], zeroed[key], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(zeroed["capture/head0/logits"], zeroed[key], atol=1e-3)


@pytest.mark.parametrize("family,metric,target", [
    ("phi3", "channel_contribution", "mlp.down_proj"),
    ("phi3", "kv_head_contribution", "self_attn.o_proj"),
    ("gpt2", "l2_norm", "mlp.down_proj"),
    ("gpt_neox", "channel_contribution", "mlp.down_proj"),
])
def test_pruned_fused_checkpoint_equals_intervene_lowest(tmp_path, family, metric, target):
    """Phi-3's `qkv_proj`/`gate_up_proj`, GPT-2's Conv1D and GPT-NeoX's per-head
    `query_key_value` cut by `expc prune` give, loaded by expc, head 1's logits of the
    original with the same units zeroed by `intervene`."""
    hf = build(family, tmp_path / "ckpt")
    run = scoring_run(tmp_path, tmp_path / "ckpt", hf.config.vocab_size)
    out = tmp_path / "pruned"
    prune(PruneRequest(run=run, metric=metric, out=out, fraction=0.5))
    zeroed = _logits_run(tmp_path, tmp_path / "ckpt", "zeroed", body=(
        f"intervene {target}[*] of heads[1] {{ set = zero, channels = lowest(run = \"{run}\", "
        f"metric = {metric}, fraction = 0.5) }}"))
    pruned = _logits_run(tmp_path, out, "pruned_run")
    key = "capture/head1/logits"
    torch.testing.assert_close(pruned[key], zeroed[key], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(zeroed["capture/head0/logits"], zeroed[key], atol=1e-3)


def test_sharded_source_stays_sharded(tmp_path):
    hf = build("llama", tmp_path / "ckpt", max_shard_size="20KB")
    run = scoring_run(tmp_path, tmp_path / "ckpt", hf.config.vocab_size)
    out = tmp_path / "pruned"
    result = prune(PruneRequest(run=run, metric="channel_contribution", out=out, keep=20))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    assert_equals_zeroed(hf, "llama", out, result.provenance)


@pytest.mark.parametrize("listed", [True, False])
def test_qwen2_windows_survive_layer_removal(tmp_path, listed):
    """Qwen2 derives sliding layers from `max_window_layers` (counted from layer 0) unless
    config.json lists `layer_types`: after removing layer 0 the kept layers keep their own
    attention windows either way (the list filtered, or written out)."""
    from hf_reference import hf_model, save

    hf = hf_model("qwen2", use_sliding_window=True, sliding_window=3, max_window_layers=1)
    save(hf, tmp_path / "ckpt")
    if not listed:
        path = tmp_path / "ckpt" / "config.json"
        config = json.loads(path.read_text())
        del config["layer_types"]
        path.write_text(json.dumps(config))
    run = layer_run(tmp_path / "run", tmp_path / "ckpt", [0.0, 0.5, 0.9])
    out = tmp_path / "pruned"
    result = prune(PruneRequest(run=run, metric="block_influence", out=out, keep=2))
    config = json.loads((out / "config.json").read_text())
    assert config["layer_types"] == ["sliding_attention", "sliding_attention"]
    assert_equals_zeroed(hf, "qwen2", out, result.provenance)


def test_hydra_run_prunes_by_the_named_head(tmp_path):
    """Layer 0 sits in the trunk (one score), layers 1-2 in each head (per-head scores):
    `--head 1` reads head 1's there and the trunk's at layer 0; no `--head` is refused."""
    hf = build("llama", tmp_path / "ckpt")
    run = scoring_run(tmp_path, tmp_path / "ckpt", hf.config.vocab_size,
                      hydra="hydra { trunk = 1  heads = 2 }")
    with pytest.raises(DiagnosticError, match="per Hydra head") as caught:
        prune(PruneRequest(run=run, metric="channel_contribution", out=tmp_path / "a",
                           fraction=0.25))
    assert "--head" in caught.value.diagnostics[0].help[0]
    result = prune(PruneRequest(run=run, metric="channel_contribution", out=tmp_path / "b",
                                fraction=0.25, head=1))
    assert result.provenance["score_keys"] == [
        "importance/channel_contribution/layers.0.mlp.down_proj/score",
        "importance/channel_contribution/head1/layers.1.mlp.down_proj/score",
        "importance/channel_contribution/head1/layers.2.mlp.down_proj/score"]
    with pytest.raises(DiagnosticError, match="no `channel_contribution` scores of head 5"):
        prune(PruneRequest(run=run, metric="channel_contribution", out=tmp_path / "c",
                           fraction=0.25, head=5))
