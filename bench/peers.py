"""The peer methods: how researchers capture pooled residual streams today.

Each method loads its own copy of the workload's checkpoint (wrapping tools may change the
model they wrap), sets up once, and returns a runner: `runner(batches)` runs every batch and
returns `{layer: [N, H]}`, the masked mean over real tokens of `resid_out[layer]` (the raw
output of block `layer`) for every sample and every layer the workload captures. The plain
forward returns `{}`: it is the baseline every ratio divides by. Set-up (wrapping) is
outside the timed calls but inside the peak-memory measurement. A runner takes the whole
workload, not one batch, so that a method which owns its own loop (`expc run`) fits too.

TransformerLens and nnsight are imported only when their method is built: they live in the
benchmark's own environment (`bench/setup_env.sh`), never in expc's dependencies.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable, Sequence

import attrs
import torch

from bench.workloads import Batch, Workload

Runner = Callable[[Sequence[Batch]], dict[int, torch.Tensor]]
BatchRunner = Callable[[Batch], dict[int, torch.Tensor]]
LAYER_LISTS = {"decoder": "model.layers", "encoder": "encoder.layer"}


@attrs.frozen(kw_only=True)
class Method:
    """A way to get the workload's captures; `build` returns its runner (after set-up)."""

    name: str
    label: str
    build: Callable[[Workload], Runner]
    requires: tuple[str, ...] = ()  # importable modules the method needs

    def unavailable_reason(self) -> str | None:
        missing = [module for module in self.requires if importlib.util.find_spec(module) is None]
        if missing:
            return f"not installed here: {', '.join(missing)} (run `bench/setup_env.sh`)"
        return None


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens of each sample: [B, S, H], [B, S] -> [B, H]."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # [B, S, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)  # [B, H]


def layer_list(root, workload: Workload):
    """The block list of a model (or of an nnsight envoy, which mirrors its attributes)."""
    return functools.reduce(getattr, LAYER_LISTS[workload.family].split("."), root)


def block_output(output) -> torch.Tensor:
    """A block's hidden state, whether the block returns a tensor or a tuple led by one."""
    return output[0] if isinstance(output, tuple) else output  # [B, S, H]


def over_batches(per_batch: BatchRunner) -> Runner:
    """A whole-workload runner from a one-batch one: per-batch means joined along samples."""

    def run(batches: Sequence[Batch]) -> dict[int, torch.Tensor]:
        parts: dict[int, list[torch.Tensor]] = {}
        for batch in batches:
            for layer, means in per_batch(batch).items():
                parts.setdefault(layer, []).append(means)  # [B, H]
        return {layer: torch.cat(chunks) for layer, chunks in parts.items()}  # [N, H]

    return run


def _plain(workload: Workload) -> Runner:
    model = workload.load_model()

    def run(batch: Batch) -> dict[int, torch.Tensor]:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return {}

    return over_batches(run)


def _hidden_states(workload: Workload) -> Runner:
    model = workload.load_model()
    # transformers 5 replaces hidden_states[-1] with the final norm's output unless told not to.
    model.config.tie_last_hidden_states = False

    def run(batch: Batch) -> dict[int, torch.Tensor]:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    output_hidden_states=True)
        # hidden_states[0] is the embedding output; [L + 1] is block L's output.
        return {layer: masked_mean(out.hidden_states[layer + 1], batch.attention_mask)
                for layer in workload.layers}

    return over_batches(run)


def _forward_hooks(workload: Workload) -> Runner:
    model = workload.load_model()
    blocks = layer_list(model, workload)
    state: dict = {"mask": None, "means": {}}

    def hook_for(layer: int):
        def hook(module, args, output):
            state["means"][layer] = masked_mean(block_output(output), state["mask"])
        return hook

    for layer in workload.layers:
        blocks[layer].register_forward_hook(hook_for(layer))

    def run(batch: Batch) -> dict[int, torch.Tensor]:
        state["mask"], state["means"] = batch.attention_mask, {}
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return state["means"]

    return over_batches(run)


def _transformer_lens(workload: Workload) -> Runner:
    from transformer_lens.model_bridge import TransformerBridge

    if workload.family == "decoder":
        hf_model, stop_at_layer = workload.load_model(), None
    else:
        # TransformerLens wraps BERT only as a masked LM. The checkpoint has no MLM head (it is
        # initialised at random), so the run stops after the last block instead of paying for it.
        from transformers import AutoModelForMaskedLM

        hf_model = AutoModelForMaskedLM.from_pretrained(workload.checkpoint, dtype=torch.float32).eval()
        stop_at_layer = workload.n_layers
    bridge = TransformerBridge.boot_transformers(str(workload.checkpoint), hf_model=hf_model,
                                                 tokenizer=workload.load_tokenizer())
    names = {layer: f"blocks.{layer}.hook_resid_post" for layer in workload.layers}
    wanted = list(names.values())

    def run(batch: Batch) -> dict[int, torch.Tensor]:
        _, cache = bridge.run_with_cache(batch.input_ids, names_filter=wanted,
                                         attention_mask=batch.attention_mask,
                                         stop_at_layer=stop_at_layer)
        return {layer: masked_mean(cache[name], batch.attention_mask) for layer, name in names.items()}

    return over_batches(run)


def _nnsight(workload: Workload) -> Runner:
    import nnsight

    task = "text-generation" if workload.family == "decoder" else "feature-extraction"
    with warnings.catch_warnings():  # BERT's submodules named `output` shadow nnsight's `.output`
        warnings.simplefilter("ignore", UserWarning)
        wrapped = nnsight.TransformersModel(workload.load_model(), task=task,
                                            tokenizer=workload.load_tokenizer())
    blocks = layer_list(wrapped, workload)

    def run(batch: Batch) -> dict[int, torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        with wrapped.trace({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}):
            for layer in workload.layers:
                saved[layer] = masked_mean(block_output(blocks[layer].output),
                                           batch.attention_mask).save()
        return saved

    return over_batches(run)


PEERS = (
    Method(name="plain", label="plain HF forward (baseline)", build=_plain),
    Method(name="hidden_states", label="HF `output_hidden_states=True` + masked mean",
           build=_hidden_states),
    Method(name="forward_hooks", label="PyTorch forward hooks on the HF model", build=_forward_hooks),
    Method(name="transformer_lens", label="TransformerLens `run_with_cache`", build=_transformer_lens,
           requires=("transformer_lens",)),
    Method(name="nnsight", label="nnsight `trace` + `.save()`", build=_nnsight, requires=("nnsight",)),
)
