"""Gemma 2 (sandwich norms, soft-capping, query scaling, sliding layers, GeGLU, scaled
embeddings) against `transformers`: every capture site, the logits, a Hydra split, fp32
and bf16."""

import json

import pytest
import torch
import transformers
from arch_parity import SANDWICH_MODULES, assert_sites_match, bf16_logits_close

from expc.models.loading import load_model
from expc.spec.diagnostics import DiagnosticError, Span
from expc.spec.model_shape import read_model_shape

# Small caps and a window of 4 < 10 tokens, so each feature changes the numbers.
GEMMA2 = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              max_position_embeddings=128, rms_norm_eps=1e-6, pad_token_id=0,
              query_pre_attn_scalar=24, sliding_window=4, attn_logit_softcapping=1.5,
              final_logit_softcapping=2.0)


def _hf(**overrides):
    return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**{**GEMMA2, **overrides}))


@pytest.mark.parametrize("trunk", [None, 1])
def test_every_site_and_the_logits_match_hugging_face(tmp_path, trunk):
    assert_sites_match(_hf(), tmp_path, trunk=trunk, modules=SANDWICH_MODULES)


def test_without_soft_capping(tmp_path):
    assert_sites_match(_hf(attn_logit_softcapping=None, final_logit_softcapping=None,
                           tie_word_embeddings=False), tmp_path, trunk=2, modules=SANDWICH_MODULES)


def test_bfloat16_logits_are_close(tmp_path):
    bf16_logits_close(_hf(final_logit_softcapping=30.0), tmp_path)


def test_config_reading(tmp_path):
    _hf().save_pretrained(tmp_path)
    model = load_model(tmp_path)
    cfg = model.config
    assert cfg.sliding_windows == (4, None, 4, None)
    assert (cfg.attn_logit_softcap, cfg.final_logit_softcap) == (1.5, 2.0)
    assert cfg.attention_scale == 24 ** -0.5 and cfg.hidden_act == "gelu_pytorch_tanh"
    assert model.lm_head.weight is model.embed_tokens.weight  # Gemma ties by default
    shape = read_model_shape(str(tmp_path), span=Span(path="spec.exp"))
    assert "pre_feedforward_layernorm" in shape.norm_modules


def test_a_bad_soft_cap_is_a_diagnostic_at_its_line(tmp_path):
    _hf().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["attn_logit_softcapping"] = "big"
    path.write_text(json.dumps(config, indent=2))
    with pytest.raises(DiagnosticError) as caught:
        load_model(tmp_path)
    (diagnostic,) = caught.value.diagnostics
    assert "attn_logit_softcapping" in diagnostic.message and diagnostic.span.line > 1


def test_check_lists_the_new_model_types_for_an_unknown_one(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_model"}))
    with pytest.raises(DiagnosticError) as caught:
        read_model_shape(str(tmp_path), span=Span(path="spec.exp"))
    (diagnostic,) = caught.value.diagnostics
    assert "no_such_model" in diagnostic.message
    assert all(t in " ".join(diagnostic.help) for t in ("gemma2", "qwen3", "llama"))
