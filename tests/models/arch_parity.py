"""Every capture site of one of our models against forward hooks on `transformers`' model.

Each new architecture's test hands a tiny random Hugging Face model (weights scrambled by
`hf_reference.scramble`) to `assert_sites_match`: it is saved, loaded with our loader
(optionally Hydra-split), compiled with a plan that captures every per-layer site in every
head plus `embed`, `final_norm` and `logits`, and each capture is compared with the same
point of Hugging Face's eager forward.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
import transformers
from hf_reference import VOCAB, scramble

from expc.compiler.pipeline import compile_plan
from expc.compiler.plan import CaptureEntry, Plan
from expc.models.loading import load_model
from expc.spec import ir
from expc.spec.run_format import capture_key

LAYER_SITES = ("resid_in", "attn_in", "attn_out", "resid_mid", "mlp_in", "mlp_out",
               "resid_out", "values", "attn_pattern")
# Where Hugging Face computes a site, relative to a decoder layer; post-norm families
# (Gemma 2) add their branch norms' outputs to the residual stream.
PRE_NORM_MODULES = {"attn_in": "input_layernorm", "attn_out": "self_attn",
                    "mlp_in": "post_attention_layernorm", "mlp_out": "mlp",
                    "values": "self_attn.v_proj"}
SANDWICH_MODULES = {**PRE_NORM_MODULES, "attn_out": "post_attention_layernorm",
                    "mlp_in": "pre_feedforward_layernorm", "mlp_out": "post_feedforward_layernorm"}
N_HEADS = 2


def _ids(batch: int = 2, length: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@attrs.frozen(kw_only=True)
class HFLayout:
    """Where a Hugging Face model keeps its embeddings' output, final norm, layers and each
    layer's attention (Llama's names by default; GPT-2's `transformer.h`, ...)."""

    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    layers: str = "model.layers"
    attn: str = "self_attn"


def hf_sites(model: transformers.PreTrainedModel, ids: torch.Tensor, modules: dict,
             layout: HFLayout = HFLayout()) -> dict[tuple[str, int | None], torch.Tensor]:
    """(site, layer) -> Hugging Face's tensor there, `attn_pattern` as `[B, S_q, n, S_k]`.
    `modules` maps a site to a layer's submodule path, or to `(path, pick)` where the site
    is `pick(input, output)` of that submodule."""
    found: dict[tuple[str, int | None], torch.Tensor] = {}

    def keep(key, pick=lambda out: out[0] if isinstance(out, tuple) else out):
        return lambda _m, _a, out: found.__setitem__(key, pick(out).detach())

    hooks = [model.get_submodule(layout.embed).register_forward_hook(keep(("embed", None))),
             model.get_submodule(layout.final_norm).register_forward_hook(keep(("final_norm", None)))]
    blocks = model.get_submodule(layout.layers)
    for layer, block in enumerate(blocks):
        hooks.append(block.register_forward_pre_hook(
            lambda _m, args, kwargs, layer=layer: found.__setitem__(
                ("resid_in", layer), (args[0] if args else kwargs["hidden_states"]).detach()),
            with_kwargs=True))
        hooks.append(block.register_forward_hook(keep(("resid_out", layer))))
        hooks.append(block.get_submodule(layout.attn).register_forward_hook(
            keep(("attn_pattern", layer), lambda out: out[1].permute(0, 2, 1, 3))))
        for site, path in modules.items():
            if isinstance(path, str):
                hooks.append(block.get_submodule(path).register_forward_hook(keep((site, layer))))
                continue
            path, pick = path
            hooks.append(block.get_submodule(path).register_forward_hook(
                lambda _m, args, out, key=(site, layer), pick=pick: found.__setitem__(
                    key, pick(args[0], out).detach())))
    try:
        with torch.no_grad():
            found[("logits", None)] = model(input_ids=ids).logits
    finally:
        for hook in hooks:
            hook.remove()
    for layer in range(len(blocks)):
        found[("resid_mid", layer)] = found[("resid_in", layer)] + found[("attn_out", layer)]
    return found


def _entry(site: str, layer: int | None, head: int | None) -> CaptureEntry:
    return CaptureEntry(key=capture_key(site, layer, head), site=site, name=site, layer=layer,
                        head=head, mode="full")


def our_sites(model, ids: torch.Tensor, extra: tuple[str, ...] = (), *,
              sites: tuple[str, ...] = LAYER_SITES
              ) -> dict[tuple[str, int | None, int | None], torch.Tensor]:
    """(site, layer, head) -> our capture, every site of every head (`sites` plus `extra`
    per layer), compiled like a run."""
    layout = model.hydra
    split_heads = range(layout.n_heads) if layout.is_split else (None,)
    entries = [_entry("embed", None, None)]
    for head in split_heads:
        entries += [_entry(site, None, head) for site in ("final_norm", "logits")
                    if site != "logits" or model.lm_head is not None]
        for layer in range(layout.n_layers):
            if layer >= layout.trunk or head == split_heads[0]:
                in_heads = layout.is_split and layer >= layout.trunk
                entries += [_entry(site, layer, head if in_heads else None)
                            for site in (*sites, *extra)]
    plan = Plan(layout=layout, captures=tuple(entries), metrics=(), interventions=(), effects=())
    found: dict = {}
    sinks = {e.key: (lambda x, *_, e=e: found.__setitem__((e.site, e.layer, e.head), x.detach()))
             for e in entries}
    compiled = compile_plan(plan, model, sinks)
    with torch.no_grad():
        compiled.graph_module(ids, torch.ones_like(ids))
    return found


def eager(model: transformers.PreTrainedModel) -> transformers.PreTrainedModel:
    """Scrambled weights and Hugging Face's eager attention (the one that returns patterns)."""
    scramble(model)
    model.set_attn_implementation("eager")
    return model.eval()


def assert_sites_match(hf: transformers.PreTrainedModel, folder: Path, *, trunk: int | None,
                       modules: dict = PRE_NORM_MODULES, layout: HFLayout = HFLayout(),
                       atol: float = 1e-5) -> None:
    """Every site and the logits of our loaded model equal Hugging Face's (fp32)."""
    hf = eager(hf)
    hf.save_pretrained(folder)
    hydra = None if trunk is None else ir.Hydra(trunk=trunk, heads=N_HEADS)
    ours = load_model(folder, hydra=hydra)
    ids = _ids()
    theirs = hf_sites(hf, ids, modules, layout)
    extra = tuple(site for site in modules if site not in LAYER_SITES)
    mine = our_sites(ours, ids, extra)
    assert {(site, layer) for site, layer, _ in mine} == set(theirs)
    for (site, layer, head), value in mine.items():
        torch.testing.assert_close(value, theirs[(site, layer)], atol=atol, rtol=0,
                                   msg=lambda m: f"{site}[{layer}] head {head}: {m}")
    assert_truncated_build_equal(folder, hydra=hydra, ids=ids, sites=(*LAYER_SITES, *extra))


def assert_truncated_build_equal(ref, *, hydra: ir.Hydra | None, ids: torch.Tensor,
                                 sites: tuple[str, ...] = LAYER_SITES, last: int = 1) -> None:
    """A model built with only the layers a plan reads (`Plan.layers_needed`) captures
    exactly, bit for bit, what the whole model does: every site of layers `0..last` in every
    head, and `embed`."""
    full = load_model(ref, hydra=hydra)
    layout = full.hydra
    split_heads = range(layout.n_heads) if layout.is_split else (None,)
    entries = {_entry("embed", None, None)}
    entries |= {_entry(site, layer, head if layout.is_split and layer >= layout.trunk else None)
                for layer in range(last + 1) for head in split_heads for site in sites}
    plan = Plan(layout=layout, captures=tuple(sorted(entries, key=lambda e: e.key)))
    assert plan.layers_needed == last + 1
    truncated = load_model(ref, hydra=hydra, n_layers_built=plan.layers_needed)
    assert truncated.truncated and truncated.lm_head is None
    built = {name for name, _ in truncated.named_parameters()}
    assert built < {name for name, _ in full.named_parameters()}
    assert not any(f"layers.{last + 1}." in name for name in built)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second row
    found = []
    for model in (full, truncated):
        values: dict = {}
        sinks = {e.key: (lambda x, *_, key=e.key: values.__setitem__(key, x.detach()))
                 for e in plan.captures}
        with torch.no_grad():
            compile_plan(plan, model, sinks).graph_module(ids, mask)
        found.append(values)
    assert found[0].keys() == found[1].keys() == {e.key for e in plan.captures}
    for key, value in found[0].items():
        assert torch.equal(value, found[1][key]), key


def bf16_logits_close(hf: transformers.PreTrainedModel, folder: Path) -> None:
    """In bfloat16 our logits stray from the float32 logits no more than Hugging Face's own
    bfloat16 logits do (times 1.5, plus 0.01): rounding differs, accuracy must not."""
    hf = eager(hf)
    ids = _ids()
    with torch.no_grad():
        exact = hf(input_ids=ids).logits
        hf = hf.to(torch.bfloat16)
        hf.save_pretrained(folder)
        theirs = hf(input_ids=ids).logits.float()
        mine = load_model(folder, dtype="bfloat16")(ids)[0]
    assert mine.dtype == torch.bfloat16
    their_error = (theirs - exact).abs().max()
    assert 0 < their_error < 0.1 * exact.abs().max()
    assert (mine.float() - exact).abs().max() <= 1.5 * their_error + 0.01


def assert_config_diagnostic(folder: Path, message: str) -> None:
    """Loading `folder` is a diagnostic with `message` at its line in config.json."""
    from expc.spec.diagnostics import DiagnosticError

    try:
        load_model(folder)
    except DiagnosticError as err:
        diagnostic = err.diagnostics[0]
        assert message in diagnostic.message and diagnostic.span.path.endswith("config.json")
        assert diagnostic.span.line > 1
    else:
        raise AssertionError(f"loading {folder} raised no diagnostic")
