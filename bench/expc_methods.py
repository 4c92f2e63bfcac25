"""expc's own rows in the comparison: the compiled model called directly, and `expc run`.

Both start from the same `.exp` spec, written for the workload into `.cache/bench/expc/NAME/`
with its data as a jsonl file of the workload's texts (the bench tokenizer maps them back to
exactly the workload's token ids; MiniLM's are the real sentences):

- `expc_compiled`: `expc.load`, then the plan compiled on the loaded `HydraTransformer` with
  sinks feeding expc's own state objects (`mean(mask = attention)` aggregators, importance
  metrics), built and bound by the runtime's own `build_states` / `bind_sinks`
  and read back by `collect_results`, as `expc run` does; the runner calls the
  instrumented graph on the workload's batches (no tokenising, no run folder) — the
  like-for-like row.
- `expc_run`: `expc.run(spec)` end to end, once per pass: load, tokenise, batch, compile,
  run, write the run folder. Its time includes all of that, where the peers' time is the
  forward loop alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from bench.metric_formulas import (CHANNEL_CONTRIBUTION, KV_HEAD_CONTRIBUTION, METRIC_MODULES,
                                   RESID_OUT, output_key)
from bench.peers import Method, Runner
from bench.workloads import CACHE_DIR, Batch, Workload

SPEC_TEMPLATE = """\
experiment bench_{name} {{
    model  = "{checkpoint}"
    dtype  = float32
    device = cpu

    data {{
        source     = jsonl("{data}", field = "text")
        batch_size = {batch_size}
        max_length = {max_length}
    }}

    capture resid_out[{layers}] {{ aggregate = mean(mask = attention) }}
{importances}
    output {{
        dir = "{out}"
    }}
}}
"""


IMPORTANCE_STATEMENTS = {
    CHANNEL_CONTRIBUTION: "    importance channel_contribution at mlp.down_proj[{layers}]\n",
    KV_HEAD_CONTRIBUTION: "    importance kv_head_contribution at self_attn.o_proj[{layers}] "
                          "{{ optimize_for = memory }}\n",
}


def contract_key(key: str) -> str:
    """The result key (contracts §3) holding the bench output `key` (`kind/layer`)."""
    kind, layer = key.split("/")
    if kind == RESID_OUT:
        return f"capture/resid_out_{layer}"
    return f"importance/{kind}/layers.{layer}.{METRIC_MODULES[kind]}/score"


def bench_outputs(results: Mapping[str, torch.Tensor], workload: Workload
                  ) -> dict[str, torch.Tensor]:
    """The workload's outputs, by bench key, from expc's results (per-sample rows in data order)."""
    keys = [output_key(RESID_OUT, layer) for layer in workload.layers]
    keys += [output_key(metric, layer) for metric in workload.metrics for layer in workload.layers]
    return {key: results[contract_key(key)] for key in keys}


def _selector(workload: Workload) -> str:
    if workload.layers == tuple(range(workload.n_layers)):
        return "*"
    return ", ".join(str(layer) for layer in workload.layers)


def write_spec(workload: Workload) -> Path:
    """Write the workload's spec and jsonl data; return the spec's path."""
    folder = CACHE_DIR / "expc" / workload.name
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in workload.texts),
                    encoding="utf-8")
    first = workload.batches[0].input_ids  # [B, S]
    layers = _selector(workload)
    spec = folder / "bench.exp"
    spec.write_text(SPEC_TEMPLATE.format(
        name=workload.name, checkpoint=workload.checkpoint, data=data,
        batch_size=first.shape[0], max_length=max(b.input_ids.shape[1] for b in workload.batches),
        layers=layers, out=folder / "run",
        importances="".join(IMPORTANCE_STATEMENTS[metric].format(layers=layers)
                            for metric in workload.metrics),
    ), encoding="utf-8")
    return spec


def _expc_compiled(workload: Workload) -> Runner:
    import expc
    from expc.compiler.pipeline import compile_plan
    from expc.compiler.plan import build_plan
    from expc.models.loading import load_model
    from expc.runtime.sinks import BatchContext, bind_sinks
    from expc.runtime.state import build_states, collect_results

    experiment = expc.load(write_spec(workload))
    model = load_model(workload.checkpoint)
    plan = build_plan(experiment, n_layers=model.config.n_layers)
    metric_keys = {entry.key for entry in plan.metrics}
    context = BatchContext()
    live: dict = {}  # key -> the bound sink of the pass in progress (fresh states every pass)

    def forward_to_live(key: str):
        def sink(*tensors: torch.Tensor) -> None:
            live[key](*tensors)
        return sink

    graph = compile_plan(plan, model, {key: forward_to_live(key) for key in plan.keys}).graph_module

    def run(batches: list[Batch]) -> dict[str, torch.Tensor]:
        states = build_states(plan, model, total_batches=len(batches))
        live.clear()
        live.update(bind_sinks(states, metric_keys=metric_keys, context=context))
        token_count = []
        for batch in batches:
            context.set(attention_mask=batch.attention_mask, field_mask=None)
            graph(batch.input_ids, batch.attention_mask)
            token_count.append(batch.attention_mask.sum(dim=1))  # [B]
        token_count = torch.cat(token_count)  # [N]
        results, _ = collect_results(plan, states, sample_index=torch.arange(token_count.numel()),
                                     token_count=token_count)
        return bench_outputs(results, workload)

    return run


def _expc_run(workload: Workload) -> Runner:
    import expc

    spec = write_spec(workload)
    out = spec.parent / "run"

    def run(batches: list[Batch]) -> dict[str, torch.Tensor]:
        return bench_outputs(expc.run(spec, out=out, force=True, quiet=True), workload)  # data order

    return run


EXPC_METHODS: tuple[Method, ...] = (
    Method(name="expc_compiled", label="expc compiled model, called directly", build=_expc_compiled,
           requires=("expc.compiler.pipeline", "expc.models.loading", "expc.runtime.state")),
    Method(name="expc_run", label="`expc run` end to end (load + compile + run + write)",
           build=_expc_run, requires=("expc.runtime.execute",)),
)
