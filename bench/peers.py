"""The peer methods: how researchers capture pooled residual streams and importance scores today.

Each method loads its own copy of the workload's checkpoint (wrapping tools may change the
model they wrap), sets up once, and returns a runner: `runner(batches)` runs every batch and
returns a dict keyed by `bench.metric_formulas.output_key`: `resid_out/L` `[N, H]`, the masked
mean over real tokens of the raw output of block L for every sample and every layer the
workload captures, and, on a workload with metrics, `channel_contribution/L` `[I]` and
`kv_head_contribution/L` `[K]` over the whole pass, computed by the bench's own formulas from
the module inputs the tool exposes. The plain forward returns `{}`: it is the baseline every
ratio divides by. Set-up (wrapping) is outside the timed calls but inside the peak-memory
measurement. A runner takes the whole workload, not one batch, so that a method which owns its
own loop (`expc run`) fits too.

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

from bench.metric_formulas import (CHANNEL_CONTRIBUTION, KV_HEAD_CONTRIBUTION, METRIC_MODULES,
                                   RESID_OUT, RunningMetrics, metric_targets, output_key)
from bench.workloads import Batch, Workload

Runner = Callable[[Sequence[Batch]], dict[str, torch.Tensor]]
BatchRunner = Callable[[Batch], dict[str, torch.Tensor]]
LAYER_LISTS = {"decoder": "model.layers", "encoder": "encoder.layer"}
FORWARD_ORDER = (KV_HEAD_CONTRIBUTION, CHANNEL_CONTRIBUTION)  # attention runs before the MLP


@attrs.frozen(kw_only=True)
class Method:
    """A way to get the workload's outputs; `build` returns its runner (after set-up)."""

    name: str
    label: str
    build: Callable[[Workload], Runner]
    requires: tuple[str, ...] = ()  # importable modules the method needs
    no_metrics: str = ""  # why the method cannot compute importance metrics ("" when it can)

    def unavailable_reason(self, workload: Workload | None = None) -> str | None:
        missing = [module for module in self.requires if importlib.util.find_spec(module) is None]
        if missing:
            return f"not installed here: {', '.join(missing)} (run `bench/setup_env.sh`)"
        if workload is not None and workload.metrics and self.no_metrics:
            return self.no_metrics
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


def running_metrics(model: torch.nn.Module, workload: Workload) -> RunningMetrics | None:
    """The workload's metric sums at the modules of a Hugging Face model; None without metrics."""
    if not workload.metrics:
        return None
    targets = metric_targets(layer_list(model, workload), workload.metrics, workload.layers)
    return RunningMetrics(targets, n_kv_heads=model.config.num_key_value_heads)


def over_batches(per_batch: BatchRunner, metrics: RunningMetrics | None = None) -> Runner:
    """A whole-workload runner from a one-batch one: per-batch means joined along samples,
    and the scores of the metric sums `per_batch` fed during the pass."""

    def run(batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
        if metrics is not None:
            metrics.reset()
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in batches:
            for key, means in per_batch(batch).items():
                parts.setdefault(key, []).append(means)  # [B, H]
            if metrics is not None:
                metrics.count(batch.attention_mask)
        outputs = {key: torch.cat(chunks) for key, chunks in parts.items()}  # [N, H]
        if metrics is not None:
            outputs.update(metrics.scores())
        return outputs

    return run


def hook_metric_inputs(metrics: RunningMetrics | None, state: dict) -> None:
    """Forward pre-hooks feeding each metric module's input to `metrics` (mask in `state`)."""
    if metrics is None:
        return
    for key, target in metrics.targets.items():
        def hook(module, args, key=key):
            metrics.add(key, args[0], state["mask"])  # args[0]: [B, S, D]
        target.module.register_forward_pre_hook(hook)


def _plain(workload: Workload) -> Runner:
    model = workload.load_model()

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return {}

    return over_batches(run)


def _hidden_states(workload: Workload) -> Runner:
    model = workload.load_model()
    # transformers 5 replaces hidden_states[-1] with the final norm's output unless told not to.
    model.config.tie_last_hidden_states = False

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    output_hidden_states=True)
        # hidden_states[0] is the embedding output; [L + 1] is block L's output.
        return {output_key(RESID_OUT, layer): masked_mean(out.hidden_states[layer + 1],
                                                         batch.attention_mask)
                for layer in workload.layers}

    return over_batches(run)


def _forward_hooks(workload: Workload) -> Runner:
    model = workload.load_model()
    blocks = layer_list(model, workload)
    state: dict = {"mask": None, "means": {}}

    def hook_for(layer: int):
        def hook(module, args, output):
            state["means"][output_key(RESID_OUT, layer)] = masked_mean(block_output(output),
                                                                       state["mask"])
        return hook

    for layer in workload.layers:
        blocks[layer].register_forward_hook(hook_for(layer))
    metrics = running_metrics(model, workload)
    hook_metric_inputs(metrics, state)

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        state["mask"], state["means"] = batch.attention_mask, {}
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return state["means"]

    return over_batches(run, metrics)


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
    names = {output_key(RESID_OUT, layer): f"blocks.{layer}.hook_resid_post"
             for layer in workload.layers}
    metrics = running_metrics(hf_model, workload)  # the bridge runs these very modules
    # The bridge's hooks on the inputs of the down projection (`mlp.out`) and of `attn.o`.
    bridge_modules = {CHANNEL_CONTRIBUTION: "mlp.out", KV_HEAD_CONTRIBUTION: "attn.o"}
    metric_names = {} if metrics is None else {
        key: f"blocks.{target.layer}.{bridge_modules[target.metric]}.hook_in"
        for key, target in metrics.targets.items()}
    wanted = [*names.values(), *metric_names.values()]

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        _, cache = bridge.run_with_cache(batch.input_ids, names_filter=wanted,
                                         attention_mask=batch.attention_mask,
                                         stop_at_layer=stop_at_layer)
        for key, name in metric_names.items():
            # attn.o's input comes per head, [B, S, n_heads, d]: flattened to [B, S, n_heads * d]
            metrics.add(key, cache[name].flatten(2), batch.attention_mask)
        return {key: masked_mean(cache[name], batch.attention_mask) for key, name in names.items()}

    return over_batches(run, metrics)


def _nnsight(workload: Workload) -> Runner:
    import nnsight

    task = "text-generation" if workload.family == "decoder" else "feature-extraction"
    model = workload.load_model()
    with warnings.catch_warnings():  # BERT's submodules named `output` shadow nnsight's `.output`
        warnings.simplefilter("ignore", UserWarning)
        wrapped = nnsight.TransformersModel(model, task=task, tokenizer=workload.load_tokenizer())
    blocks = layer_list(wrapped, workload)
    metrics = running_metrics(model, workload)
    # nnsight reads modules in forward order: per layer, o_proj before down_proj, then the block.
    taps: dict[int, list[tuple[str, object]]] = {layer: [] for layer in workload.layers}
    if metrics is not None:
        for key, target in sorted(metrics.targets.items(),
                                  key=lambda item: FORWARD_ORDER.index(item[1].metric)):
            role = METRIC_MODULES[target.metric]
            taps[target.layer].append((key, functools.reduce(getattr, role.split("."),
                                                             blocks[target.layer])))

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        saved: dict[str, torch.Tensor] = {}
        sums: dict[str, torch.Tensor] = {}
        mask = batch.attention_mask
        with wrapped.trace({"input_ids": batch.input_ids, "attention_mask": mask}):
            for layer in workload.layers:
                for key, envoy in taps[layer]:
                    sums[key] = metrics.token_sum(key, envoy.input, mask).save()
                saved[output_key(RESID_OUT, layer)] = masked_mean(
                    block_output(blocks[layer].output), mask).save()
        for key, token_sum in sums.items():
            metrics.add_sum(key, token_sum)
        return saved

    return over_batches(run, metrics)


PEERS = (
    Method(name="plain", label="plain HF forward (baseline)", build=_plain),
    Method(name="hidden_states", label="HF `output_hidden_states=True` + masked mean",
           build=_hidden_states,
           no_metrics="transformers returns no module inputs, so the metrics' down_proj / "
                      "o_proj inputs are out of its reach"),
    Method(name="forward_hooks", label="PyTorch forward hooks on the HF model", build=_forward_hooks),
    Method(name="transformer_lens", label="TransformerLens `run_with_cache`", build=_transformer_lens,
           requires=("transformer_lens",)),
    Method(name="nnsight", label="nnsight `trace` + `.save()`", build=_nnsight, requires=("nnsight",)),
)
