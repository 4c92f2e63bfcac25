"""Gemma 3 text (Gemma 2's block, per-head QK-norm, local/global ropes, 1-in-N global
layers) against `transformers`: every capture site, the logits, a Hydra split, fp32 and
bf16."""

import pytest
import transformers
from arch_parity import SANDWICH_MODULES, assert_sites_match, bf16_logits_close

from expc.models.loading import load_model

GEMMA3 = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              max_position_embeddings=128, rms_norm_eps=1e-6, pad_token_id=0,
              query_pre_attn_scalar=24, sliding_window=4, sliding_window_pattern=3,
              rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                               "full_attention": {"rope_type": "linear", "rope_theta": 1000.0,
                                                  "factor": 4.0}})


def _hf(**overrides):
    config = transformers.Gemma3TextConfig(**{**GEMMA3, **overrides})
    return transformers.Gemma3ForCausalLM(config)


@pytest.mark.parametrize("trunk", [None, 2])
def test_every_site_and_the_logits_match_hugging_face(tmp_path, trunk):
    assert_sites_match(_hf(), tmp_path, trunk=trunk, modules=SANDWICH_MODULES)


def test_bfloat16_logits_are_close(tmp_path):
    bf16_logits_close(_hf(), tmp_path)


def test_local_and_global_ropes(tmp_path):
    _hf().save_pretrained(tmp_path)
    model = load_model(tmp_path)
    cfg = model.config
    assert cfg.sliding_windows == (4, 4, None, 4)
    assert (cfg.local_rope.theta, cfg.rope.theta, cfg.rope.rope_type) == (10.0, 1000.0, "linear")
    assert model.layers["0"].self_attn.local_rotary is not None
    assert model.layers["2"].self_attn.local_rotary is None
