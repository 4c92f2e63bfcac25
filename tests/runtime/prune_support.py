"""Tiny Hugging Face checkpoints, scoring runs on them, and the zeroed reference for the
`expc prune` tests.

Every family is built from a tiny config with scrambled weights (`hf_reference`), saved, and
scored by a real `expc run` (channel_contribution, l2_norm and kv_head_contribution at every
layer). `block_influence` runs are written by hand (the metric has its own tests): a
manifest naming the model and one score per layer. The reference for a pruned checkpoint
is the original Hugging Face model with forward hooks that zero the removed units — the
input channels of `down_proj` / `o_proj` that the pruned tensors no longer have — or that
pass a removed layer's input through unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors import safe_open

import expc
from expc.models.loading import load_model
from expc.runtime.prune.export import PruneRequest, prune
from expc.spec.run_format import FORMAT, MANIFEST, RESULTS, importance_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from hf_reference import hf_model, save, scramble  # noqa: E402
from test_bert import randomize, tiny_config  # noqa: E402

LENGTHS = [6, 3, 9, 4, 7]
# family -> (HF layer list path, MLP down path, attention output path) under one layer
PATHS = {
    "decoder": ("model.layers", "mlp.down_proj", "self_attn.o_proj"),
    "bert": ("encoder.layer", "output.dense", "attention.output.dense"),
    "gpt2": ("transformer.h", "mlp.c_proj", "attn.c_proj"),
    "gpt_neox": ("gpt_neox.layers", "mlp.dense_4h_to_h", "attention.dense"),
}
FAMILIES = ("llama", "mistral", "qwen2", "olmo2", "bert")
# Checkpoints that store fused (and GPT-2's transposed) projections.
FUSED_FAMILIES = ("phi3", "gpt2", "gpt_neox")
HF_FAMILY = {"llama": "llama", "mistral": "mistral-window", "qwen2": "qwen2", "olmo2": "olmo2"}
# family -> (config class, model class, config) of the families built from their own tiny
# config here (the fused ones and Mixtral, 3 layers each; Qwen3 and Gemma, 4 layers each)
CONFIGS = {
    "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM, dict(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel, dict(
        vocab_size=61, n_embd=32, n_layer=3, n_head=4, n_inner=48, n_positions=128,
        bos_token_id=0, eos_token_id=0)),
    "gpt_neox": (transformers.GPTNeoXConfig, transformers.GPTNeoXForCausalLM, dict(
        vocab_size=61, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=128, rotary_pct=0.5, bos_token_id=0,
        eos_token_id=0)),
    # 4 experts, 2 per token, 4 query heads on 2 KV heads, a window of 4 tokens
    "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM, dict(
        vocab_size=61, hidden_size=32, intermediate_size=24, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=128, tie_word_embeddings=False,
        sliding_window=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    # QK-norm per head (`[head_dim]` weights shared by every head), head_dim 16 != 32 / 4
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    # sandwich norms, soft caps, query_pre_attn_scalar != head_dim, alternating windows
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM, dict(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        query_pre_attn_scalar=24, sliding_window=4, attn_logit_softcapping=1.5,
        final_logit_softcapping=2.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    # Gemma 2's block with QK-norm per head, one global layer in 3, local and global ropes
    "gemma3_text": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM, dict(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        query_pre_attn_scalar=24, sliding_window=4, sliding_window_pattern=3,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000.0}},
        pad_token_id=0, bos_token_id=1, eos_token_id=2)),
}


def build(family: str, folder: Path, *, max_shard_size: str | None = None):
    """A scrambled tiny HF model of `family`, saved to `folder` (with a tokenizer.json)."""
    if family in CONFIGS:
        config_cls, model_cls, config = CONFIGS[family]
        hf = model_cls(config_cls(**config)).eval()
        scramble(hf)
        save(hf, folder, max_shard_size=max_shard_size)
    elif family == "bert":
        hf = randomize(transformers.BertModel(tiny_config(num_hidden_layers=3),
                                              add_pooling_layer=False))
        hf.save_pretrained(folder, **({} if max_shard_size is None
                                      else {"max_shard_size": max_shard_size}))
    else:  # olmo2's family config has 4 KV heads: give it GQA too
        extra = {"num_key_value_heads": 2} if family == "olmo2" else {}
        hf = hf_model(HF_FAMILY[family], **extra)
        save(hf, folder, max_shard_size=max_shard_size)
    (folder / "tokenizer.json").write_text('{"stand-in": "copied as is"}')
    return hf


def write_data(path: Path, vocab: int) -> None:
    gen = torch.Generator().manual_seed(11)
    rows = [{"input_ids": torch.randint(1, vocab, (n,), generator=gen).tolist()}
            for n in LENGTHS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


WIDTH_METRICS = """
    importance channel_contribution at mlp.down_proj[*]
    importance l2_norm at mlp.down_proj[*]
    importance kv_head_contribution at self_attn.o_proj[*]"""


def scoring_run(folder: Path, model: Path, vocab: int, *, hydra: str = "",
                name: str = "scores", statements: str = WIDTH_METRICS) -> Path:
    """A real `expc run` scoring every layer with `statements` (the three width metrics)."""
    write_data(folder / "data.jsonl", vocab)
    spec = folder / f"{name}.exp"
    spec.write_text(f"""
experiment {name} {{
    model = "{model}"
    {hydra}
    data {{ source = tokens("{folder / 'data.jsonl'}")  batch_size = 2 }}
    {statements}
    output {{ dir = "{folder / name}" }}
}}
""")
    expc.run(spec)
    return folder / name


def layer_run(folder: Path, model: Path, scores: list[float], *, status: str = "complete",
              head: int | None = None) -> Path:
    """A hand-written run folder with one `block_influence` score per layer."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    prefix = "" if head is None else f"heads.{head}."
    tensors = {importance_key("block_influence", f"{prefix}layers.{layer}", "score"):
               torch.tensor([score]) for layer, score in enumerate(scores)}
    save_file(tensors, str(folder / RESULTS))
    manifest = {"format": FORMAT, "status": status, "model": {"path": str(model)},
                "tensors": {}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def config_field(family: str, name: str) -> str:
    """A config.json field under the family's own name (GPT-2's `n_inner`, `n_layer`)."""
    return {"intermediate_size": "n_inner", "num_hidden_layers": "n_layer"}[name] \
        if family == "gpt2" else name


def paths(family: str) -> tuple[str, str, str]:
    return PATHS.get(family, PATHS["decoder"])


def zeroing_hooks(hf, family: str, provenance: dict) -> list:
    """Hooks on the original HF model that zero (or skip) what the pruned folder removed."""
    layers_path, down, o_proj = paths(family)
    layers = hf.get_submodule(layers_path)
    handles = []
    if provenance["unit"] == "layers":
        for layer in provenance["removed_layers"]:
            handles.append(layers[layer].register_forward_hook(_skip, with_kwargs=True))
        return handles
    cfg = hf.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    groups = cfg.num_attention_heads // getattr(cfg, "num_key_value_heads",
                                                cfg.num_attention_heads)
    for layer, units in provenance["removed"].items():
        if provenance["unit"] == "neurons":
            channels = list(units)
            module = layers[int(layer)].get_submodule(down)
        else:
            channels = [(kv * groups + q) * head_dim + i for kv in units
                        for q in range(groups) for i in range(head_dim)]
            module = layers[int(layer)].get_submodule(o_proj)
        handles.append(module.register_forward_pre_hook(_zero(channels)))
    return handles


def _zero(channels: list[int]):
    def hook(_module, args):
        x = args[0].clone()
        x[..., channels] = 0.0
        return (x, *args[1:])
    return hook


def _skip(_module, args, kwargs, output):
    hidden = args[0] if args else kwargs["hidden_states"]
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def hf_outputs(hf, ids: torch.Tensor, mask: torch.Tensor, hooks=()) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = hf(input_ids=ids, attention_mask=mask)
    finally:
        for handle in hooks:
            handle.remove()
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def load_pruned(folder: Path, family: str):
    cls = transformers.AutoModel if family == "bert" else transformers.AutoModelForCausalLM
    return cls.from_pretrained(folder).eval()


def batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, vocab, (2, 7), generator=torch.Generator().manual_seed(3))
    return ids, torch.tensor([[1] * 7, [1] * 5 + [0] * 2])


def assert_equals_zeroed(hf, family: str, out: Path, provenance: dict) -> None:
    """The pruned folder, loaded by `transformers`, gives the original with its removed
    units zeroed (or its removed layers skipped), on the real tokens of a padded batch."""
    ids, mask = batch(hf.config.vocab_size)
    real = mask.bool()
    torch.testing.assert_close(
        hf_outputs(load_pruned(out, family), ids, mask)[real],
        hf_outputs(hf, ids, mask, zeroing_hooks(hf, family, provenance))[real],
        atol=2e-5, rtol=1e-4)


def assert_pruned(hf, family: str, out: Path, provenance: dict) -> None:
    """Something was removed, and the pruned folder equals the original with the units
    zeroed (HF hooks), loaded by `transformers` and by expc alike."""
    ids, mask = batch(hf.config.vocab_size)
    real = mask.bool()
    pruned = hf_outputs(load_pruned(out, family), ids, mask)
    assert not torch.allclose(pruned[real], hf_outputs(hf, ids, mask)[real], atol=1e-3)
    assert_equals_zeroed(hf, family, out, provenance)
    with torch.no_grad():
        ours = load_model(out)(ids, mask)[0]
    torch.testing.assert_close(ours[real], pruned[real], atol=2e-5, rtol=1e-4)


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a one-file checkpoint folder."""
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def prune_weakest_layer(run: Path, out: Path, *, layers: int):
    """`expc prune` of one of `layers` layers by the run's real `block_influence` scores:
    the result, and the layer removed (checked to be the lowest-scored)."""
    with safe_open(str(run / RESULTS), framework="pt") as handle:
        scores = [handle.get_tensor(importance_key("block_influence", f"layers.{layer}",
                                                   "score")).item() for layer in range(layers)]
    result = prune(PruneRequest(run=run, metric="block_influence", out=out, keep=layers - 1))
    gone = min(range(layers), key=scores.__getitem__)
    assert result.provenance["removed_layers"] == [gone]
    return result, gone
