"""The finer sites (`mlp_post`, `q`, `k`, `v`, `z`, `lens`) of every architecture against
`transformers`, in float32 and in bfloat16 (both models in that dtype; tolerances in
`dtype_parity`), through a Hydra split.

Hugging Face's values come from its own forward: `q`/`k`/`v` and `z` are what its attention
function receives (after rotary and any QK-norm, before GQA's repeat) and returns, read by
wrapping the `eager_attention_forward` that each model's attention looks up at call time;
`mlp_post` is the input of the down projection (a pre-hook); `lens` is the final norm and LM
head (Gemma's soft-cap included) applied to each layer's output.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import attrs
import pytest
import torch
import transformers
from arch_parity import _ids, eager, our_sites
from dtype_parity import assert_site_close
from hf_reference import hf_model

from expc.models.loading import load_model
from expc.spec import ir

import test_gemma2
import test_gemma3
import test_gpt2
import test_mixtral
import test_phi3
import test_qwen3

ATTENTION_SITES = ("q", "k", "v", "z")


@attrs.frozen(kw_only=True)
class Family:
    """Where one Hugging Face family keeps what the finer sites read."""

    build: Callable[[], transformers.PreTrainedModel]
    modeling: str  # the `transformers.models.X.modeling_X` whose attention function we wrap
    layers: str = "model.layers"
    down_proj: str | None = "mlp.down_proj"  # per layer; None: no `mlp_post` (an MoE)
    final_norm: str | None = "model.norm"  # None: no LM head, no `lens` (an encoder)

    @property
    def sites(self) -> tuple[str, ...]:
        return (*ATTENTION_SITES, *(("mlp_post",) if self.down_proj else ()),
                *(("lens",) if self.final_norm else ()))


def _bert() -> transformers.PreTrainedModel:
    return transformers.BertModel(transformers.BertConfig(
        vocab_size=61, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64), add_pooling_layer=False)


FAMILIES = {
    "llama": Family(build=lambda: hf_model("llama"), modeling="llama"),
    "mistral": Family(build=lambda: hf_model("mistral-window"), modeling="mistral"),
    "qwen2": Family(build=lambda: hf_model("qwen2"), modeling="qwen2"),
    "olmo2": Family(build=lambda: hf_model("olmo2"), modeling="olmo2"),
    "qwen3": Family(build=test_qwen3._hf, modeling="qwen3"),
    "gemma2": Family(build=test_gemma2._hf, modeling="gemma2"),
    "gemma3_text": Family(build=test_gemma3._hf, modeling="gemma3"),
    "phi3": Family(build=test_phi3._hf, modeling="phi3"),
    "gpt2": Family(build=test_gpt2._hf, modeling="gpt2", layers="transformer.h",
                   down_proj="mlp.c_proj", final_norm="transformer.ln_f"),
    "bert": Family(build=_bert, modeling="bert", layers="encoder.layer",
                   down_proj="output.dense", final_norm=None),
    "mixtral": Family(build=test_mixtral._hf, modeling="mixtral", down_proj=None),
}


def hf_finer_sites(hf: transformers.PreTrainedModel, family: Family, ids: torch.Tensor,
                   monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, int], torch.Tensor]:
    """(site, layer) -> Hugging Face's value, `[B, S, ...]` as our captures."""
    seen: dict[tuple[str, int], torch.Tensor] = {}
    modeling = importlib.import_module(
        f"transformers.models.{family.modeling}.modeling_{family.modeling}")
    original = modeling.eager_attention_forward

    def attention(module, query, key, value, *args, **kwargs):  # each [B, n, S, d]
        out = original(module, query, key, value, *args, **kwargs)
        layer = module.layer_idx
        for site, heads in zip(ATTENTION_SITES, (query, key, value, out[0].transpose(1, 2))):
            seen[site, layer] = heads.transpose(1, 2)
        return out

    def keep(site: str, layer: int, pick):
        return lambda _m, args, out=None: seen.__setitem__((site, layer), pick(args, out))

    hooks = []
    for layer, block in enumerate(hf.get_submodule(family.layers)):
        hooks.append(block.register_forward_hook(keep("resid_out", layer, lambda _a, out: (
            out[0] if isinstance(out, tuple) else out))))
        if family.down_proj:
            hooks.append(block.get_submodule(family.down_proj).register_forward_pre_hook(
                keep("mlp_post", layer, lambda args, _out: args[0])))
    try:
        with torch.no_grad(), monkeypatch.context() as patch:
            patch.setattr(modeling, "eager_attention_forward", attention)
            hf(input_ids=ids)
            if family.final_norm:
                norm, cap = hf.get_submodule(family.final_norm), getattr(
                    hf.config, "final_logit_softcapping", None)
                for layer in range(hf.config.num_hidden_layers):
                    lens = hf.lm_head(norm(seen["resid_out", layer]))
                    seen["lens", layer] = lens if cap is None else torch.tanh(lens / cap) * cap
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_finer_sites_match_hugging_face(name, dtype, tmp_path, monkeypatch):
    family = FAMILIES[name]
    hf = eager(family.build())
    ids = _ids()
    exact = None
    if dtype == "bfloat16":
        exact = hf_finer_sites(hf, family, ids, monkeypatch)
        hf = hf.to(torch.bfloat16)
    theirs = hf_finer_sites(hf, family, ids, monkeypatch)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path, hydra=ir.Hydra(trunk=1, heads=2), dtype=dtype)
    mine = {key: value for key, value in our_sites(ours, ids, sites=family.sites).items()
            if key[1] is not None}  # our_sites adds the model-wide sites
    assert {(site, layer) for site, layer, _ in mine} == {
        (site, layer) for site in family.sites for layer in range(hf.config.num_hidden_layers)}
    for (site, layer, head), value in mine.items():
        assert_site_close(value, theirs[site, layer],
                          None if exact is None else exact[site, layer].float(),
                          f"{name} {dtype} {site}[{layer}] head {head}")
