"""N variants of one model, four ways: one expc Hydra run, and N forwards with each peer tool.

A variant set is `ablated`: variant 0 is the untouched model, variant h (h >= 1) the model
with the MLP output of layer `ablated[h - 1]` set to zero. Each way's runner takes one batch
and returns every variant's logits `[B, S, V]`, in variant order:

- `expc`: a spec with `hydra { trunk = auto heads = N }` and `intervene mlp_out[L] of
  heads[h] { set = zero }`, loaded with `expc.load`, its model loaded and its plan compiled
  in-process with the runtime's own edits (`build_edits`), as `expc run` does; each head's
  logits reach the runner through a tap (`capture logits`, a sink that keeps the tensor), as
  an effect or capture would read them — not as the graph's stacked output, whose
  `[N, B, S, V]` copy (64 ms of 4 heads here) no run pays.
- `hf_hooks`: one Hugging Face model, N forwards; a forward hook on `layers[L].mlp` returns
  zeros for the ablated variant.
- `transformer_lens`: the TransformerLens bridge's `run_with_hooks` with a hook on
  `blocks.L.hook_mlp_out` returning zeros, N calls.
- `nnsight`: N traces, each setting `model.layers[L].mlp.output` to zeros inside the trace
  and saving the logits.

The peers zero every position; expc zeroes the real tokens (its `positions = all`). Batches
are right-padded and the model is causal, so the real tokens' logits are the same, and only
those are compared.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import attrs
import torch

from bench.workloads import Batch, word_texts

VariantRunner = Callable[[Batch], list[torch.Tensor]]  # batch -> per-variant logits [B, S, V]
Reduce = Callable[[torch.Tensor], torch.Tensor]  # one variant's logits -> what the runner keeps


def _keep(logits: torch.Tensor) -> torch.Tensor:
    return logits

SPEC_TEMPLATE = """\
experiment bench_variants_{name} {{
    model  = "{checkpoint}"
    dtype  = float32
    device = cpu
{hydra}
    data {{
        source     = jsonl("{data}", field = "text")
        batch_size = {batch_size}
        max_length = {max_length}
    }}
{interventions}{effects}
    output {{
        dir = "{out}"
    }}
}}
"""


@attrs.frozen(kw_only=True)
class VariantSpec:
    """What one expc spec runs: `heads` heads (1: no split), head h ablating `ablated[h - 1]`."""

    heads: int
    ablated: tuple[int, ...]  # layers whose mlp_out a head zeroes, one per head past head 0
    trunk: int | None = None  # None: `trunk = auto`
    loss: bool = False  # `effect loss` on every head (what a memory probe's run computes)

    @property
    def name(self) -> str:
        trunk = "auto" if self.trunk is None else str(self.trunk)
        layers = "_".join(map(str, self.ablated)) or "none"
        return f"h{self.heads}_t{trunk}_a{layers}" + ("_loss" if self.loss else "")


def spec_text(variant: VariantSpec, *, checkpoint: Path, data: Path, batch: Batch,
              out: Path) -> str:
    hydra = ""
    if variant.heads > 1:
        trunk = "auto" if variant.trunk is None else variant.trunk
        hydra = f"\n    hydra {{\n        trunk = {trunk}\n        heads = {variant.heads}\n    }}\n"
    interventions = "".join(f"    intervene mlp_out[{layer}] of heads[{head}] {{ set = zero }}\n"
                            for head, layer in enumerate(variant.ablated, start=1))
    return SPEC_TEMPLATE.format(
        name=variant.name, checkpoint=checkpoint, hydra=hydra, data=data,
        batch_size=batch.input_ids.shape[0], max_length=batch.input_ids.shape[1],
        interventions=interventions, effects="    effect loss\n" if variant.loss else "", out=out)


def write_spec(variant: VariantSpec, *, checkpoint: Path, batch: Batch, folder: Path) -> Path:
    """The variant spec and its jsonl data (the batch's texts) under `folder`; the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in word_texts((batch,))),
                    encoding="utf-8")
    spec = folder / f"{variant.name}.exp"
    spec.write_text(spec_text(variant, checkpoint=checkpoint, data=data, batch=batch,
                              out=folder / f"run-{variant.name}"), encoding="utf-8")
    return spec


def expc_variants(variant: VariantSpec, *, checkpoint: Path, batch: Batch,
                  folder: Path) -> VariantRunner:
    """One compiled Hydra graph computing every variant in one forward."""
    import expc
    from expc.compiler.pipeline import compile_plan
    from expc.compiler.plan import build_plan
    from expc.models.loading import load_model
    from expc.runtime.intervene.edits import build_edits
    from expc.runtime.intervene.facts import ModelFacts
    from expc.runtime.intervene.sources import RunSources
    from expc.runtime.sinks import BatchContext

    from expc.spec import ir

    experiment = expc.load(write_spec(variant, checkpoint=checkpoint, batch=batch, folder=folder))
    experiment = attrs.evolve(experiment, captures=(ir.Capture(
        site="logits", layers=None, aggregate=ir.Aggregate(mode="full")),))
    model = load_model(experiment.model.path, hydra=experiment.hydra,
                       interventions=experiment.interventions)
    plan = build_plan(experiment, n_layers=model.config.n_layers)
    context = BatchContext()
    edits, _ = build_edits(plan.interventions, facts=ModelFacts.from_model(model, plan.interventions),
                           sources=RunSources(device="cpu"), context=context,
                           n_samples=batch.input_ids.shape[0])
    found: dict[int, torch.Tensor] = {}
    sinks = {entry.key: (lambda logits, h=entry.head or 0: found.__setitem__(h, logits))
             for entry in plan.captures}
    graph = compile_plan(plan, model, sinks, edits).graph_module

    def run(batch: Batch) -> list[torch.Tensor]:
        context.set(attention_mask=batch.attention_mask, field_mask=None,
                    input_ids=batch.input_ids, sample_index=torch.arange(batch.input_ids.shape[0]))
        found.clear()
        graph(batch.input_ids, batch.attention_mask)
        return [found[h] for h in sorted(found)]  # N x [B, S, V]

    run.model, run.edits = model, edits  # the study counts its parameters and times its edits
    return run


def _zeros(module, args, output):
    return torch.zeros_like(output)


def load_hf(checkpoint: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()


def hf_hooks_variants(ablated: tuple[int, ...], *, checkpoint: Path, tokenizer=None,
                      reduce: Reduce = _keep) -> VariantRunner:
    model = load_hf(checkpoint)

    def run(batch: Batch) -> list[torch.Tensor]:
        found = []
        for layer in (None, *ablated):
            handle = None if layer is None else model.model.layers[layer].mlp.register_forward_hook(_zeros)
            try:
                found.append(reduce(model(input_ids=batch.input_ids,
                                          attention_mask=batch.attention_mask).logits))
            finally:
                if handle is not None:
                    handle.remove()
        return found

    return run


def transformer_lens_variants(ablated: tuple[int, ...], *, checkpoint: Path, tokenizer,
                              reduce: Reduce = _keep) -> VariantRunner:
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(checkpoint), hf_model=load_hf(checkpoint),
                                                 tokenizer=tokenizer)

    def zero(activation, hook):
        return torch.zeros_like(activation)

    def run(batch: Batch) -> list[torch.Tensor]:
        return [reduce(bridge.run_with_hooks(
            batch.input_ids, attention_mask=batch.attention_mask,
            fwd_hooks=[] if layer is None else [(f"blocks.{layer}.hook_mlp_out", zero)]))
            for layer in (None, *ablated)]

    return run


def nnsight_variants(ablated: tuple[int, ...], *, checkpoint: Path, tokenizer,
                     reduce: Reduce = _keep) -> VariantRunner:
    import nnsight

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        wrapped = nnsight.TransformersModel(load_hf(checkpoint), task="text-generation",
                                            tokenizer=tokenizer)

    def run(batch: Batch) -> list[torch.Tensor]:
        found = []
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        for layer in (None, *ablated):
            with wrapped.trace(inputs):
                if layer is not None:
                    mlp = wrapped.model.layers[layer].mlp
                    mlp.output = torch.zeros_like(mlp.output)
                logits = wrapped.lm_head.output.save()
            found.append(reduce(logits))
        return found

    return run


PEERS: dict[str, tuple[str, Callable[..., VariantRunner], str | None]] = {
    # name -> (label, build, module it needs)
    "hf_hooks": ("HF + forward hooks, N forwards", hf_hooks_variants, None),
    "transformer_lens": ("TransformerLens `run_with_hooks`, N calls", transformer_lens_variants,
                         "transformer_lens"),
    "nnsight": ("nnsight `trace` with an edit, N traces", nnsight_variants, "nnsight"),
}
