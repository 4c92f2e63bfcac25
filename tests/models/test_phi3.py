"""Phi-3 (fused `qkv_proj` / `gate_up_proj`, split into Llama's modules at load time)
against `transformers`: every capture site, the logits, a Hydra split, fp32 and bf16."""

import json

import pytest
import torch
import transformers
from arch_parity import (PRE_NORM_MODULES, assert_config_diagnostic, assert_sites_match,
                         bf16_logits_close)
from torch import nn

from expc.models.loading import load_model
from expc.spec.diagnostics import DiagnosticError, Span
from expc.spec.model_shape import read_model_shape

PHI3 = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-6, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
            eos_token_id=2)
KV = 2 * 8  # key/value heads x head_dim


class ValueRows(nn.Module):
    """Hugging Face's value projection: the last rows of `qkv_proj`'s output. Phi-3 has no
    `v_proj` module to hook, so a hook on `qkv_proj` calls this one for the `values` site."""

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        return qkv[..., -KV:]


def _call_value_rows(module: nn.Module, _args, out: torch.Tensor) -> None:
    module.value_rows(out)  # returns None: `qkv_proj`'s output stays as it is


def _hf(**overrides):
    model = transformers.Phi3ForCausalLM(transformers.Phi3Config(**{**PHI3, **overrides}))
    for layer in model.model.layers:
        qkv = layer.self_attn.qkv_proj
        qkv.value_rows = ValueRows()  # no parameters: the saved checkpoint is unchanged
        qkv.register_forward_hook(_call_value_rows)
    return model


MODULES = {**PRE_NORM_MODULES, "values": "self_attn.qkv_proj.value_rows"}


@pytest.mark.parametrize("trunk", [None, 2])
def test_every_site_and_the_logits_match_hugging_face(tmp_path, trunk):
    assert_sites_match(_hf(), tmp_path, trunk=trunk, modules=MODULES)


def test_sliding_window_and_tied_embeddings(tmp_path):
    assert_sites_match(_hf(sliding_window=4, tie_word_embeddings=True), tmp_path, trunk=None,
                       modules=MODULES)


def test_bfloat16_logits_are_close(tmp_path):
    bf16_logits_close(_hf(), tmp_path)


def test_fused_projections_load_as_llamas_modules(tmp_path):
    hf = _hf()
    hf.save_pretrained(tmp_path)
    shape = read_model_shape(str(tmp_path), span=Span(path="spec.exp"))
    assert "self_attn.k_proj" in shape.linear_modules and "mlp.gate_proj" in shape.linear_modules
    ours = load_model(tmp_path).layers["1"]
    fused = hf.model.layers[1]
    torch.testing.assert_close(ours.self_attn.k_proj.weight, fused.self_attn.qkv_proj.weight[32:48])
    torch.testing.assert_close(ours.mlp.up_proj.weight, fused.mlp.gate_up_proj.weight[48:])


def _config_with(tmp_path, **fields):
    _hf().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}, indent=2))


@pytest.mark.parametrize("fields, message", [
    (dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 4,
                           "long_factor": [1.0] * 4}), "unsupported rope type `longrope`"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                           "partial_rotary_factor": 0.5}), "unsupported partial_rotary_factor"),
])
def test_unsupported_rotary_is_a_diagnostic(tmp_path, fields, message):
    _config_with(tmp_path, **fields)
    assert_config_diagnostic(tmp_path, message)


def test_a_fused_tensor_of_the_wrong_shape_is_a_diagnostic(tmp_path):
    _config_with(tmp_path, intermediate_size=40)
    with pytest.raises(DiagnosticError, match=r"tensor `model.layers.0.mlp.gate_up_proj.weight` has shape \[96, 32\] but the "
                       r"model built from config.json expects \[80, 32\]"):
        load_model(tmp_path)

