"""Each family's per-layer sliding windows, read by `expc.models.sliding_windows` (torch-free,
shared by the config readers and `expc prune`), equal what Hugging Face's own config class
derives — with the config's `layer_types` written out and, where the family derives them
(Qwen2/3's `max_window_layers`, Gemma's pattern), without."""

from __future__ import annotations

import pytest
import transformers

from expc.models.sliding_windows import sliding_windows

CASES = [
    ("llama", transformers.LlamaConfig, dict(num_hidden_layers=2)),
    ("mistral", transformers.MistralConfig, dict(num_hidden_layers=3, sliding_window=4)),
    ("phi3", transformers.Phi3Config, dict(num_hidden_layers=2, sliding_window=9)),
    ("mixtral", transformers.MixtralConfig, dict(num_hidden_layers=2, sliding_window=9)),
    ("qwen2", transformers.Qwen2Config, dict(num_hidden_layers=4, use_sliding_window=True,
                                             sliding_window=5, max_window_layers=2)),
    ("qwen2", transformers.Qwen2Config, dict(num_hidden_layers=3, sliding_window=5)),  # off
    ("qwen3", transformers.Qwen3Config, dict(num_hidden_layers=4, use_sliding_window=True,
                                             sliding_window=5, max_window_layers=1)),
    ("gemma2", transformers.Gemma2Config, dict(num_hidden_layers=5, sliding_window=7)),
    ("gemma3_text", transformers.Gemma3TextConfig, dict(num_hidden_layers=7, sliding_window=7)),
    ("gemma3_text", transformers.Gemma3TextConfig, dict(num_hidden_layers=5, sliding_window=3,
                                                        sliding_window_pattern=2)),
]


def _hf_windows(config) -> tuple[int | None, ...]:
    """Hugging Face's reading: `layer_types` where the class derives it, else the one
    `sliding_window` (None: none) on every layer."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if types is None:
        return (window,) * config.num_hidden_layers
    return tuple(window if t == "sliding_attention" else None for t in types)


@pytest.mark.parametrize("model_type,config_cls,fields", CASES)
@pytest.mark.parametrize("layer_types", ["written", "derived"])
def test_windows_equal_hugging_face_s(model_type, config_cls, fields, layer_types):
    config = config_cls(**fields)
    raw = config.to_dict()
    if layer_types == "derived":
        raw.pop("layer_types", None)
    assert sliding_windows(model_type, raw, "config.json") == _hf_windows(config)
