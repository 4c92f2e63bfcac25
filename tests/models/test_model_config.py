"""Reading `config.json` dicts into `ModelConfig` through the registry, and built-in models."""

import pytest
import torch

from expc.models.builtin import builtin_config, open_builtin
from expc.models.loading import load_model
from expc.models.registry import read_config, supported
from expc.spec.builtin_models import BUILTIN_CONFIGS
from expc.spec.diagnostics import DiagnosticError

LLAMA = dict(BUILTIN_CONFIGS["tiny-llama"])


def _diagnostic(excinfo):
    (diagnostic,) = excinfo.value.diagnostics
    return diagnostic


def test_flat_and_nested_rope_layouts_agree():
    flat = read_config({**LLAMA, "rope_theta": 500.0})
    nested = {k: v for k, v in LLAMA.items() if k != "rope_theta"}
    nested["rope_parameters"] = {"rope_type": "default", "rope_theta": 500.0}
    assert read_config(nested).rope == flat.rope
    assert flat.rope.theta == 500.0 and flat.kv_groups == 2 and flat.head_dim == 16


def test_old_rope_scaling_layout_is_read():
    scaling = {"type": "linear", "factor": 2.0}
    config = read_config({**LLAMA, "rope_scaling": scaling})
    assert config.rope.rope_type == "linear" and config.rope.factor == 2.0
    default = read_config(LLAMA).rope.inverse_frequencies(16)
    torch.testing.assert_close(config.rope.inverse_frequencies(16), default / 2.0)


def test_unsupported_architecture_lists_the_supported_ones():
    raw = {**LLAMA, "model_type": "rwkv", "architectures": ["RwkvForCausalLM"]}
    with pytest.raises(DiagnosticError) as excinfo:
        read_config(raw, source="ckpt/config.json")
    diagnostic = _diagnostic(excinfo)
    assert diagnostic.span.path == "ckpt/config.json" and "rwkv" in diagnostic.message
    for model_type in ("bert", "llama", "mistral", "qwen2", "olmo2"):
        assert model_type in diagnostic.help[0]
    assert {"llama", "mistral", "qwen2", "olmo2"} <= set(supported())


def test_architecture_name_is_enough_without_model_type():
    raw = {k: v for k, v in LLAMA.items() if k != "model_type"}
    raw["architectures"] = ["Qwen2ForCausalLM"]
    raw["model_type"] = None
    assert read_config(raw).qkv_bias is True


def test_unsupported_rope_type_and_missing_field_are_diagnostics():
    with pytest.raises(DiagnosticError, match="rope type `yarn`"):
        read_config({**LLAMA, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    raw = {k: v for k, v in LLAMA.items() if k != "hidden_size"}
    with pytest.raises(DiagnosticError, match="missing `hidden_size`"):
        read_config(raw)


def test_qwen2_sliding_window_layers():
    raw = {**LLAMA, "model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8,
           "max_window_layers": 2}
    assert read_config(raw).sliding_windows == (None, None, 8, 8)
    raw["layer_types"] = ["sliding_attention", "full_attention"] * 2
    assert read_config(raw).sliding_windows == (8, None, 8, None)
    assert read_config(LLAMA).sliding_windows == (None,) * 4


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(DiagnosticError) as excinfo:
        builtin_config("builtin:tiny-gpt")
    assert "builtin:tiny-llama" in _diagnostic(excinfo).help[0]


def test_builtin_weights_are_deterministic_and_distinct():
    first, second = load_model("builtin:tiny-olmo2"), load_model("builtin:tiny-olmo2")
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name
    q = first.layers["0"].self_attn.q_proj.weight
    assert not torch.equal(q, first.layers["1"].self_attn.q_proj.weight)
    assert 0.015 < q.std() < 0.025
    assert torch.equal(first.layers["0"].self_attn.q_norm.weight, torch.ones(64))
    checkpoint = open_builtin("builtin:tiny-llama")
    assert "model.layers.3.mlp.down_proj.weight" in checkpoint.keys()
    assert "lm_head.weight" in checkpoint.keys()


def test_unknown_activation_is_a_diagnostic():
    with pytest.raises(DiagnosticError, match="activation `swiglu_x`"):
        read_config({**LLAMA, "hidden_act": "swiglu_x"})
    assert read_config({**LLAMA, "hidden_act": "gelu_pytorch_tanh"}).hidden_act == "gelu_pytorch_tanh"
