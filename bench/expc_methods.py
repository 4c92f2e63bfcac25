"""expc's own rows in the comparison: the compiled model called directly, and `expc run`.

Both start from the same `.exp` spec, written for the workload into `.cache/bench/expc/NAME/`
with its data as a jsonl file of the workload's texts (the bench tokenizer maps them back to
exactly the workload's token ids; MiniLM's are the real sentences):

- `expc_compiled`: `expc.load` + `expc.compile` on the loaded `HydraTransformer`, with sinks
  feeding expc's own `mean(mask = attention)` aggregators; the runner calls the instrumented
  graph on the workload's batches (no tokenising, no run folder) — the like-for-like row.
- `expc_run`: `expc.run(spec)` end to end, once per pass: load, tokenise, batch, compile,
  run, write the run folder. Its time includes all of that, where the peers' time is the
  forward loop alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

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

    output {{
        dir = "{out}"
    }}
}}
"""


def capture_key(layer: int) -> str:
    """The result key of `capture resid_out[layer]` (contracts §3)."""
    return f"capture/resid_out_{layer}"


def write_spec(workload: Workload) -> Path:
    """Write the workload's spec and jsonl data; return the spec's path."""
    folder = CACHE_DIR / "expc" / workload.name
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in workload.texts),
                    encoding="utf-8")
    first = workload.batches[0].input_ids  # [B, S]
    spec = folder / "bench.exp"
    spec.write_text(SPEC_TEMPLATE.format(
        name=workload.name, checkpoint=workload.checkpoint, data=data,
        batch_size=first.shape[0], max_length=max(b.input_ids.shape[1] for b in workload.batches),
        layers=", ".join(str(layer) for layer in workload.layers), out=folder / "run",
    ), encoding="utf-8")
    return spec


def _expc_compiled(workload: Workload) -> Runner:
    import expc
    from expc.models.loading import load_model
    from expc.runtime.aggregators import create_aggregator
    from expc.runtime.sinks import BatchContext

    experiment = expc.load(write_spec(workload))
    context = BatchContext()
    live: dict = {}  # key -> the aggregator of the pass in progress

    def sink_for(key: str):
        def sink(hidden: torch.Tensor) -> None:
            live[key].add(hidden, attention_mask=context.attention_mask, field_mask=None)
        return sink

    keys = {layer: capture_key(layer) for layer in workload.layers}
    compiled = expc.compile(experiment, model=load_model(workload.checkpoint),
                            sinks={key: sink_for(key) for key in keys.values()})
    graph = compiled.graph_module

    def run(batches: list[Batch]) -> dict[int, torch.Tensor]:
        live.clear()
        live.update({key: create_aggregator(mode="mean", mask="attention") for key in keys.values()})
        for batch in batches:
            context.set(attention_mask=batch.attention_mask, field_mask=None)
            graph(batch.input_ids, batch.attention_mask)
        return {layer: live[key].result()[""] for layer, key in keys.items()}  # [N, H]

    return run


def _expc_run(workload: Workload) -> Runner:
    import expc

    spec = write_spec(workload)
    out = spec.parent / "run"

    def run(batches: list[Batch]) -> dict[int, torch.Tensor]:
        results = expc.run(spec, out=out, force=True, quiet=True)
        data_order = torch.argsort(results["meta/sample_index"])  # rows back into data order
        return {layer: results[capture_key(layer)][data_order] for layer in workload.layers}

    return run


EXPC_METHODS: tuple[Method, ...] = (
    Method(name="expc_compiled", label="expc compiled model, called directly", build=_expc_compiled,
           requires=("expc.compiler.pipeline", "expc.models.loading", "expc.runtime.aggregators")),
    Method(name="expc_run", label="`expc run` end to end (load + compile + run + write)",
           build=_expc_run, requires=("expc.runtime.execute",)),
)
