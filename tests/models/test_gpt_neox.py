"""GPT-NeoX / Pythia (partial rotary, parallel residual, fused per-head `query_key_value`,
LayerNorm, GELU, untied `embed_out`) against `transformers`: every capture site — q/k after
rotary, v, z, mlp_post too — the logits, a Hydra split, fp32 and bf16."""

import json

import pytest
import torch
import transformers
from arch_parity import HFLayout, assert_config_diagnostic, assert_sites_match, bf16_logits_close
from torch import nn
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

from expc.models.loading import load_model
from expc.models.registry import supported
from expc.spec.diagnostics import DiagnosticError, Span
from expc.spec.model_shape import read_model_shape

NEOX = dict(vocab_size=61, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=128, rotary_pct=0.5,
            bos_token_id=0, eos_token_id=0)
HEADS, HEAD_DIM = 4, 8
LAYOUT = HFLayout(embed="gpt_neox.embed_in", final_norm="gpt_neox.final_layer_norm",
                  layers="gpt_neox.layers", attn="attention")


class Part(nn.Module):
    """One of q/k/v `[B, S, n, d]` from `query_key_value`'s output (`[head, (q|k|v), d]`),
    q and k rotated by Hugging Face's own rotary tables and `apply_rotary_pos_emb`."""

    def __init__(self, which: int, rotary: nn.Module):
        super().__init__()
        self.which = which
        self.tables = [rotary]  # a list: not a submodule, so nothing is saved with the model

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv.unflatten(-1, (HEADS, 3 * HEAD_DIM)).chunk(3, dim=-1)  # [B, S, n, d]
        if self.which == 2:
            return v
        positions = torch.arange(qkv.shape[1])[None]
        cos, sin = self.tables[0](qkv, position_ids=positions)
        rotated = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        return rotated[self.which].transpose(1, 2)


def _call_parts(module: nn.Module, _args, out: torch.Tensor) -> None:
    for part in ("q_part", "k_part", "v_part"):
        getattr(module, part)(out)  # their own hooks record them; the output stays


def _hf(**overrides):
    model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**{**NEOX, **overrides}))
    for layer in model.gpt_neox.layers:
        qkv = layer.attention.query_key_value
        for which, part in enumerate(("q_part", "k_part", "v_part")):
            setattr(qkv, part, Part(which, model.gpt_neox.rotary_emb))  # no parameters
        qkv.register_forward_hook(_call_parts)
    return model


MODULES = {"attn_in": "input_layernorm", "attn_out": "attention",
           "mlp_in": "post_attention_layernorm", "mlp_out": "mlp",
           "values": ("attention.query_key_value.v_part", lambda _in, out: out.flatten(-2)),
           "q": "attention.query_key_value.q_part", "k": "attention.query_key_value.k_part",
           "v": "attention.query_key_value.v_part", "mlp_post": "mlp.act",
           "z": ("attention.dense", lambda x, _out: x.unflatten(-1, (-1, HEAD_DIM)))}


@pytest.mark.parametrize("trunk", [None, 2])
@pytest.mark.parametrize("parallel", [True, False])
def test_every_site_and_the_logits_match_hugging_face(tmp_path, trunk, parallel):
    assert_sites_match(_hf(use_parallel_residual=parallel), tmp_path, trunk=trunk,
                       modules=MODULES, layout=LAYOUT)


def test_full_rotary_no_bias_and_a_tied_head(tmp_path):
    assert_sites_match(_hf(rotary_pct=1.0, attention_bias=False, tie_word_embeddings=True),
                       tmp_path, trunk=1, modules=MODULES, layout=LAYOUT)


@pytest.mark.parametrize("parallel", [True, False])
def test_bfloat16_logits_are_close(tmp_path, parallel):
    bf16_logits_close(_hf(use_parallel_residual=parallel), tmp_path)


def test_roles_and_fused_slices(tmp_path):
    hf = _hf()
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert "gpt_neox" in supported() and model.config.rope.dims == HEAD_DIM // 2
    fused = hf.gpt_neox.layers[1].attention.query_key_value
    attn = model.layers["1"].self_attn
    rows = fused.weight.unflatten(0, (HEADS, 3, HEAD_DIM))  # [head, (q|k|v), d, H]
    torch.testing.assert_close(attn.k_proj.weight, rows[:, 1].flatten(0, 1))
    torch.testing.assert_close(attn.v_proj.bias, fused.bias.unflatten(0, (HEADS, 3, -1))[:, 2].flatten())
    assert model.lm_head.weight is not model.embed_tokens.weight
    shape = read_model_shape(str(tmp_path), span=Span(path="spec.exp"))
    assert "mlp.gate_proj" not in shape.linear_modules and "self_attn.k_proj" in shape.linear_modules
    assert shape.norm_modules == ("input_layernorm", "post_attention_layernorm")


def _config_with(tmp_path, drop=(), **fields):
    _hf().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = {**json.loads(path.read_text()), **fields}
    for key in drop:
        config.pop(key)
    path.write_text(json.dumps(config, indent=2))


def test_an_older_pythia_config_reads_rotary_pct_and_rotary_emb_base(tmp_path):
    """Pythia's published config.json predates `rope_parameters`."""
    _config_with(tmp_path, drop=("rope_parameters",), rotary_pct=0.25, rotary_emb_base=100.0)
    rope = load_model(tmp_path).config.rope
    assert (rope.dims, rope.theta) == (2, 100.0)


@pytest.mark.parametrize("fields, message", [
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                           "partial_rotary_factor": 0.375}), "rotates 3 of 8 channels"),
    (dict(hidden_act="gelu_fast"), "unsupported activation `gelu_fast`"),
    (dict(use_parallel_residual="yes"), "use_parallel_residual"),
])
def test_unsupported_fields_are_diagnostics_at_their_line(tmp_path, fields, message):
    _config_with(tmp_path, **fields)
    assert_config_diagnostic(tmp_path, message)


def test_a_fused_tensor_of_the_wrong_shape_is_a_diagnostic(tmp_path):
    _config_with(tmp_path, head_dim=4)  # 4 heads x (q|k|v) x 4 rows, but 96 are stored
    with pytest.raises(DiagnosticError, match=r"tensor `gpt_neox.layers.0.attention."
                       r"query_key_value.weight` has shape \[96, 32\] but the model built "
                       r"from config.json expects \[48, 32\]"):
        load_model(tmp_path)


def test_importance_at_the_fused_projection_and_layernorm_match_hugging_face(tmp_path):
    """`kv_head_contribution` at `self_attn.o_proj` (each head's share of `attention.dense`,
    per token, its norm, averaged) and `layernorm_contribution` at `post_attention_layernorm`
    (mean |LayerNorm output|) from a real `expc run`, against Hugging Face's modules."""
    import expc
    from safetensors.torch import load_file

    hf = _hf()
    hf.save_pretrained(tmp_path / "ckpt")
    rows = [[5, 9, 3, 17, 2, 40], [7, 1, 22]]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in rows))
    (tmp_path / "s.exp").write_text(f"""
experiment s {{
    model = "{tmp_path / 'ckpt'}"
    data {{ source = tokens("{tmp_path / 'data.jsonl'}")  batch_size = 2 }}
    importance kv_head_contribution at self_attn.o_proj[*]
    importance layernorm_contribution at post_attention_layernorm[*]
    output {{ dir = "{tmp_path / 'run'}" }}
}}
""")
    expc.run(tmp_path / "s.exp")
    scores = load_file(str(tmp_path / "run" / "results.safetensors"))
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(("z", i), a[0]))
             for i, m in enumerate(layer.attention.dense for layer in hf.gpt_neox.layers)]
    hooks += [m.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(("ln", i), out))
              for i, m in enumerate(layer.post_attention_layernorm for layer in hf.gpt_neox.layers)]
    with torch.no_grad():
        for r in rows:
            hf(input_ids=torch.tensor([r]))
            for i, layer in enumerate(hf.gpt_neox.layers):
                w = layer.attention.dense.weight.unflatten(1, (HEADS, HEAD_DIM))  # [H, n, d]
                z = seen["z", i][0].unflatten(-1, (HEADS, HEAD_DIM))  # [S, n, d]
                seen.setdefault(("kv", i), []).append(torch.einsum("ond,snd->sno", w, z).norm(dim=-1))
                seen.setdefault(("lns", i), []).append(seen["ln", i][0].abs())
    for hook in hooks:
        hook.remove()
    for i in range(NEOX["num_hidden_layers"]):
        key = f"importance/{{}}/layers.{i}.{{}}/score"
        torch.testing.assert_close(scores[key.format("kv_head_contribution", "self_attn.o_proj")],
                                   torch.cat(seen["kv", i]).mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            scores[key.format("layernorm_contribution", "post_attention_layernorm")],
            torch.cat(seen["lns", i]).mean(0), atol=1e-5, rtol=1e-4)
