"""Qwen3 (per-head QK-norm) against `transformers`: every capture site, the logits, a
Hydra split, fp32 and bf16."""

import pytest
import torch
import transformers
from arch_parity import assert_sites_match, bf16_logits_close

from expc.models.loading import load_model
from expc.spec.model_shape import read_model_shape
from expc.spec.diagnostics import Span

QWEN3 = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False,
             pad_token_id=0)


def _hf(**overrides):
    return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**{**QWEN3, **overrides}))


@pytest.mark.parametrize("trunk", [None, 2])
def test_every_site_and_the_logits_match_hugging_face(tmp_path, trunk):
    assert_sites_match(_hf(), tmp_path, trunk=trunk)


def test_bias_follows_attention_bias(tmp_path):
    assert_sites_match(_hf(attention_bias=True, tie_word_embeddings=True), tmp_path, trunk=None)


def test_bfloat16_logits_are_close(tmp_path):
    bf16_logits_close(_hf(), tmp_path)


def test_check_knows_the_qk_norm_roles(tmp_path):
    _hf().save_pretrained(tmp_path)
    shape = read_model_shape(str(tmp_path), span=Span(path="spec.exp"))
    assert "self_attn.q_norm" in shape.norm_modules and shape.max_positions == 128
    assert load_model(tmp_path).layers["0"].self_attn.q_norm.weight.shape == (16,)
