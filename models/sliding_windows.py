"""Which layers attend within a sliding window: each family's one reading of its config.

`ModelConfig.sliding_windows` holds, per layer, the window `w` (attend to the last `w`
positions) or None (full attention). The families write it differently:

    llama, olmo2, bert, gpt2, gpt_neox  no windows
    mistral         `layer_types` (window default none), else `sliding_window` (default
                    4096) on every layer
    phi3, mixtral   `sliding_window` (default none) on every layer
    qwen2, qwen3    `layer_types` (window default none), else `sliding_window` (default 4096)
                    on the layers from `max_window_layers` (default 28) on, when
                    `use_sliding_window`
    gemma2          `layer_types`, else every second layer global; window default 4096
    gemma3_text     `layer_types`, else every `sliding_window_pattern`-th (default 6) global

The family config readers take their windows from here, and so does `expc prune`, which
rewrites a config without some layers and must keep each kept layer's window. Nothing here
imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from expc.spec.config_fields import ConfigFields
from expc.spec.model_shape import ARCHITECTURES

Windows = tuple[int | None, ...]


def _typed(fields: ConfigFields, n_layers: int, *, default: int | None) -> Windows | None:
    """Windows from `layer_types` (None when the config has none)."""
    types = fields.words("layer_types")
    if not types:
        return None
    window = fields.optional_integer("sliding_window", default=default)
    return tuple(window if t == "sliding_attention" else None for t in types[:n_layers])


def _mistral(fields: ConfigFields, n_layers: int) -> Windows:
    typed = _typed(fields, n_layers, default=None)
    return typed or (fields.optional_integer("sliding_window", default=4096),) * n_layers


def _every_layer(fields: ConfigFields, n_layers: int) -> Windows:
    return (fields.optional_integer("sliding_window", default=None),) * n_layers


def _qwen2(fields: ConfigFields, n_layers: int) -> Windows:
    typed = _typed(fields, n_layers, default=None)
    if typed is not None:
        return typed
    use = fields.flag("use_sliding_window")
    window = fields.optional_integer("sliding_window", default=4096)
    first = fields.integer("max_window_layers", default=28, minimum=0)
    return tuple(window if use and i >= first else None for i in range(n_layers))


def _gemma(pattern: int | None):
    """Gemma's rule; `pattern` None: read `sliding_window_pattern` (Gemma 3's, default 6)."""
    def windows(fields: ConfigFields, n_layers: int) -> Windows:
        every = pattern or fields.integer("sliding_window_pattern", default=6)
        types = fields.words("layer_types") or tuple(
            "sliding_attention" if (i + 1) % every else "full_attention" for i in range(n_layers))
        window = fields.optional_integer("sliding_window", default=4096)
        return tuple(window if t == "sliding_attention" else None for t in types[:n_layers])
    return windows


READERS = {"mistral": _mistral, "phi3": _every_layer, "mixtral": _every_layer,
           "qwen2": _qwen2, "qwen3": _qwen2, "gemma2": _gemma(2), "gemma3_text": _gemma(None)}


def sliding_windows(model_type: str, raw: Mapping, source: str) -> Windows:
    """Per layer of a `model_type` config: its window, or None for full attention."""
    fields = attrs.evolve(ConfigFields(raw=raw, source=source),
                          aliases=ARCHITECTURES[model_type].config_names)
    n_layers = fields.integer("num_hidden_layers")
    reader = READERS.get(model_type)
    return (None,) * n_layers if reader is None else reader(fields, n_layers)
