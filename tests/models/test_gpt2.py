"""GPT-2 (absolute positions, LayerNorm, fused Conv1D `c_attn`, GELU tanh, tied head)
against `transformers`: every capture site, the logits, a Hydra split, fp32 and bf16."""

import json

import pytest
import transformers
from arch_parity import HFLayout, assert_sites_match, bf16_logits_close

from expc.models.loading import load_model
from expc.spec.diagnostics import DiagnosticError, Span
from expc.spec.model_shape import read_model_shape

GPT2 = dict(vocab_size=61, n_embd=32, n_layer=4, n_head=4, n_positions=128,
            bos_token_id=0, eos_token_id=0)
HIDDEN = GPT2["n_embd"]
LAYOUT = HFLayout(embed="transformer.drop", final_norm="transformer.ln_f",
                  layers="transformer.h", attn="attn")
HEAD_DIM = HIDDEN // GPT2["n_head"]


def _third(index):
    """Query, key or value heads `[B, S, n, d]` of `c_attn`'s output."""
    return ("attn.c_attn", lambda _in, out: out[..., index * HIDDEN:(index + 1) * HIDDEN]
            .unflatten(-1, (-1, HEAD_DIM)))


MODULES = {"attn_in": "ln_1", "attn_out": "attn", "mlp_in": "ln_2", "mlp_out": "mlp",
           "values": ("attn.c_attn", lambda _in, out: out[..., 2 * HIDDEN:]),
           "q": _third(0), "k": _third(1), "v": _third(2), "mlp_post": "mlp.act",
           "z": ("attn.c_proj", lambda x, _out: x.unflatten(-1, (-1, HEAD_DIM)))}


def _hf(**overrides):
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**GPT2, **overrides}))


@pytest.mark.parametrize("trunk", [None, 2])
def test_every_site_and_the_logits_match_hugging_face(tmp_path, trunk):
    assert_sites_match(_hf(), tmp_path, trunk=trunk, modules=MODULES, layout=LAYOUT)


def test_an_untied_head_and_a_given_n_inner(tmp_path):
    assert_sites_match(_hf(tie_word_embeddings=False, n_inner=48, activation_function="gelu"),
                       tmp_path, trunk=1, modules=MODULES, layout=LAYOUT)


def test_bfloat16_logits_are_close(tmp_path):
    bf16_logits_close(_hf(), tmp_path)


def test_roles_and_fused_slices(tmp_path):
    hf = _hf()
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.intermediate_size == 4 * HIDDEN and model.config.max_position_embeddings == 128
    assert model.lm_head.weight is model.embed_tokens.weight
    c_attn = hf.transformer.h[1].attn.c_attn
    attn = model.layers["1"].self_attn
    assert (attn.k_proj.weight == c_attn.weight[:, HIDDEN:2 * HIDDEN].T).all()
    assert (attn.v_proj.bias == c_attn.bias[2 * HIDDEN:]).all()
    shape = read_model_shape(str(tmp_path), span=Span(path="spec.exp"))
    assert (shape.hidden, shape.n_layers, shape.intermediate) == (HIDDEN, 4, 4 * HIDDEN)
    assert "mlp.gate_proj" not in shape.linear_modules and "input_layernorm" in shape.norm_modules


def test_a_bad_gpt2_field_is_a_diagnostic_at_its_own_name(tmp_path):
    _hf().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["n_embd"] = "wide"
    path.write_text(json.dumps(config, indent=2))
    with pytest.raises(DiagnosticError) as caught:
        read_model_shape(str(tmp_path), span=Span(path="spec.exp"))
    (diagnostic,) = caught.value.diagnostics
    assert "`n_embd`" in diagnostic.message and diagnostic.span.line > 1

