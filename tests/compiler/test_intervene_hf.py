"""Interventions against an independent reference: Hugging Face models with forward hooks.

A tiny random HF Llama (and BERT) is saved, loaded by our loader with a Hydra split, and
compiled with one intervention in head 1. The reference is the HF model with a
forward hook written out here that edits the same value the same way: the intervened head must match
it, head 0 must match the plain HF model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from compiler_support import tiny_hf_bert, EditRecorder, intervention, plan_of
from expc.compiler.pipeline import compile_plan
from expc.models.hydra_split import HydraSplit
from expc.models.loading import load_model
from expc.spec import ir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from hf_reference import hf_model, save  # noqa: E402

ATOL = 1e-5


def _edit(x: torch.Tensor) -> torch.Tensor:
    """Doubling plus a shift: a scaling alone would vanish in a following RMSNorm."""
    return 2 * x + 0.25


def _output_hook(module, args, output):
    if isinstance(output, tuple):  # a decoder layer may return (hidden, ...)
        return (_edit(output[0]), *output[1:])
    return _edit(output)


def _input_hook(module, args):
    return (_edit(args[0]), *args[1:])


def _hf_output(hf, path: str | None, side: str, ids, mask) -> torch.Tensor:
    handle = None
    if path is not None:
        module = hf.get_submodule(path)
        handle = (module.register_forward_hook(_output_hook) if side == "output"
                  else module.register_forward_pre_hook(_input_hook))
    try:
        with torch.no_grad():
            out = hf(input_ids=ids, attention_mask=mask)
    finally:
        if handle is not None:
            handle.remove()
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _ours(model, layout: HydraSplit, target: str, kind: str, layer: int, ids, mask):
    plan = plan_of(intervention(target, layer, 1, kind=kind, layout=layout), layout=layout)
    compiled = compile_plan(plan, model, edits=EditRecorder(plan, _edit).edits, keep_output=True)
    with torch.no_grad():
        return compiled.graph_module(ids, mask)


def _batch(vocab: int):
    ids = torch.randint(1, vocab, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    return ids, mask


def _check(ours, plain, hooked, mask):
    real = mask.bool()
    assert torch.allclose(ours[1][real], hooked[real], atol=ATOL)
    assert torch.allclose(ours[0][real], plain[real], atol=ATOL)
    assert not torch.allclose(ours[1][real], plain[real], atol=ATOL)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    hf = hf_model("llama")
    ours = load_model(save(hf, tmp_path_factory.mktemp("llama")), hydra=ir.Hydra(trunk=1, heads=2))
    return hf, ours, HydraSplit(n_layers=3, trunk=1, n_heads=2)


# our target -> (kind, HF module path under `model.layers.{L}`, which side the hook doubles)
LLAMA = {
    "resid_out": ("site", "", "output"),
    "attn_out": ("site", "self_attn", "output"),
    "mlp_out": ("site", "mlp", "output"),
    "self_attn.o_proj": ("linear", "self_attn.o_proj", "input"),
    "mlp.down_proj": ("linear", "mlp.down_proj", "input"),
    "post_attention_layernorm": ("norm", "post_attention_layernorm", "output"),
}


@pytest.mark.parametrize("target", list(LLAMA))
@pytest.mark.parametrize("layer", [1, 2])
def test_llama_interventions_match_hugging_face_hooks(llama, target, layer):
    hf, ours, layout = llama
    kind, module, side = LLAMA[target]
    ids, mask = _batch(hf.config.vocab_size)
    path = f"model.layers.{layer}" + (f".{module}" if module else "")
    _check(_ours(ours, layout, target, kind, layer, ids, mask),
           _hf_output(hf, None, side, ids, mask), _hf_output(hf, path, side, ids, mask), mask)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    hf = tiny_hf_bert()
    folder = tmp_path_factory.mktemp("bert")
    hf.save_pretrained(folder)
    return hf, load_model(folder, hydra=ir.Hydra(trunk=1, heads=2)), HydraSplit(
        n_layers=3, trunk=1, n_heads=2)


# our target -> (kind, HF module path under `encoder.layer.{L}`, side)
BERT = {
    "resid_out": ("site", "", "output"),
    "self_attn.o_proj": ("linear", "attention.output.dense", "input"),
    "mlp.down_proj": ("linear", "output.dense", "input"),
    "post_attention_layernorm": ("norm", "attention.output.LayerNorm", "output"),
}


@pytest.mark.parametrize("target", list(BERT))
def test_bert_interventions_match_hugging_face_hooks(bert, target):
    hf, ours, layout = bert
    kind, module, side = BERT[target]
    ids, mask = _batch(hf.config.vocab_size)
    path = "encoder.layer.2" + (f".{module}" if module else "")
    _check(_ours(ours, layout, target, kind, 2, ids, mask),
           _hf_output(hf, None, side, ids, mask), _hf_output(hf, path, side, ids, mask), mask)
