"""`expc prune` on Mixtral (a sparse mixture of experts) against Hugging Face itself.

A scrambled tiny `MixtralForCausalLM` is scored by a real `expc run` (`kv_head_contribution`
at `self_attn.o_proj`, `block_influence` at `layers`). KV-head groups and whole layers prune
as for Mistral: the pruned folder loads with `transformers` and with expc and gives the
original's logits with the same `o_proj` input channels zeroed (or the same layers passing
their input through), the experts (`block_sparse_moe.*`) kept whole or renumbered with their
layer. MLP neurons are refused: they sit in the experts, which no metric scores yet.
"""

from __future__ import annotations

import json

import pytest
import torch

from expc.cli import main
from expc.runtime.prune.export import PruneRequest, prune
from expc.spec.diagnostics import DiagnosticError
from prune_support import assert_pruned, build, prune_weakest_layer, scoring_run, tensors

pytestmark = pytest.mark.slow

STATEMENTS = """
    importance kv_head_contribution at self_attn.o_proj[*]
    importance block_influence at layers[*]"""


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixtral")
    hf = build("mixtral", folder / "ckpt")
    run = scoring_run(folder, folder / "ckpt", hf.config.vocab_size, statements=STATEMENTS)
    return hf, folder, run


def test_kv_heads(scored):
    hf, folder, run = scored
    out = folder / "kv"
    result = prune(PruneRequest(run=run, metric="kv_head_contribution", out=out, keep=1))
    config = json.loads((out / "config.json").read_text())
    assert (config["num_key_value_heads"], config["num_attention_heads"]) == (1, 2)
    assert config["num_local_experts"] == 4 and result.provenance["exact"] is True
    source, pruned = tensors(folder / "ckpt"), tensors(out)
    assert source.keys() == pruned.keys()
    expert = "model.layers.2.block_sparse_moe.experts.3.w2.weight"
    assert torch.equal(pruned[expert], source[expert])  # experts are kept whole
    assert pruned["model.layers.0.self_attn.o_proj.weight"].shape == (32, 2 * 8)
    assert_pruned(hf, "mixtral", out, result.provenance)


def test_layers(scored):
    hf, folder, run = scored
    out = folder / "layers"
    result, gone = prune_weakest_layer(run, out, layers=3)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    source, pruned = tensors(folder / "ckpt"), tensors(out)
    assert not any(".layers.2." in key for key in pruned)
    for new, old in enumerate(layer for layer in range(3) if layer != gone):
        for name in ("block_sparse_moe.gate.weight", "block_sparse_moe.experts.1.w1.weight"):
            assert torch.equal(pruned[f"model.layers.{new}.{name}"],
                               source[f"model.layers.{old}.{name}"])
    assert_pruned(hf, "mixtral", out, result.provenance)


@pytest.mark.parametrize("metric", ["channel_contribution", "l2_norm"])
def test_neurons_are_refused_before_any_score_is_read(scored, metric, tmp_path):
    _, _, run = scored
    out = tmp_path / "neurons"
    with pytest.raises(DiagnosticError, match="experts' neurons are not scored yet") as caught:
        prune(PruneRequest(run=run, metric=metric, out=out, fraction=0.25))
    assert "mlp.experts.E.down_proj" in str(caught.value)
    assert "kv_head_contribution" in caught.value.diagnostics[0].help[0]
    assert list(tmp_path.iterdir()) == []


def test_neurons_on_the_command_line_exit_1(scored, tmp_path, capsys):
    _, _, run = scored
    with pytest.raises(SystemExit) as exited:
        main(["prune", str(run), "--metric", "channel_contribution", "--fraction", "0.25",
              "-o", str(tmp_path / "out")])
    text = "".join(capsys.readouterr())
    assert exited.value.code == 1 and "experts' neurons are not scored yet" in text
    assert "manifest.json" in text and "Traceback" not in text
    assert list(tmp_path.iterdir()) == []
