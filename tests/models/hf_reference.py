"""Tiny random Hugging Face decoders as the independent reference for our model code.

Each test builds a `transformers` model from a tiny config, scrambles every weight (norm
weights and biases too, so a mis-mapped tensor cannot hide behind ones and zeros), saves it
with `save_pretrained` and loads the folder with our loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

VOCAB = 61
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-6, tie_word_embeddings=False, pad_token_id=0)

# name -> (config class, model class, config overrides)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "llama-bias-tied-llama3": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500.0, "factor": 4.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                         "original_max_position_embeddings": 16},
    )),
    "mistral-window": (transformers.MistralConfig, transformers.MistralForCausalLM,
                       dict(sliding_window=4)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "olmo2": (transformers.Olmo2Config, transformers.Olmo2ForCausalLM, dict(num_key_value_heads=4)),
}


def scramble(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights of a sensible scale: matrices ~0.1, biases ~0.1, norm weights ~1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1 and "norm" in name:
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)


def hf_model(family: str, *, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    config_cls, model_cls, family_overrides = FAMILIES[family]
    config = config_cls(**{**BASE, **family_overrides, **overrides})
    model = model_cls(config).eval()
    scramble(model, seed)
    return model


def save(model: transformers.PreTrainedModel, folder: Path, *, flat_rope: bool = False,
         max_shard_size: str | None = None) -> Path:
    """`save_pretrained`; `flat_rope` rewrites `rope_parameters` to the old flat layout."""
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(folder, **kwargs)
    if flat_rope:
        path = folder / "config.json"
        config = json.loads(path.read_text())
        rope = dict(config.pop("rope_parameters"))
        config["rope_theta"] = rope.pop("rope_theta")
        if rope.pop("rope_type") != "default":
            raise ValueError("flat layout only rewritten for default rope here")
        path.write_text(json.dumps(config))
    return folder


def hf_layer_outputs(model: transformers.PreTrainedModel, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None):
    """(logits [B, S, V], [embeddings, block 0 output, block 1 output, ...]) via forward hooks."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _args, output):
        outputs.append((output[0] if isinstance(output, tuple) else output).detach())

    hooks = [model.model.embed_tokens.register_forward_hook(keep)]
    hooks += [layer.register_forward_hook(keep) for layer in model.model.layers]
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        for hook in hooks:
            hook.remove()
    return logits, outputs


def our_layer_outputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      head: int = 0):
    """Our model's (logits [n, B, S, V], [embeddings, block outputs of `head`'s path])."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _args, output):
        outputs.append(output.detach())

    modules = [model.embed_tokens, *model.layers.values(), *model.heads[head].layers.values()]
    hooks = [m.register_forward_hook(keep) for m in modules]
    try:
        with torch.no_grad():
            logits = model(input_ids, attention_mask, head_indices=[head])
    finally:
        for hook in hooks:
            hook.remove()
    return logits, outputs
