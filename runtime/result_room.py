"""Will a run's results fit? `expc check`'s warnings when they would not, in memory or on disk.

A run holds its reduced results (scores, `dataset_mean`, effects, `meta/*`) in memory until
its finish, and the rows of its per-sample captures until they fill a results shard
(`output { shard_size }`; `runtime/results_writer.py` keeps at most `SHARDS_IN_MEMORY` of them
in hand: the one filling, one queued, one being written). Results whose held part exceeds
the memory available now, or whose whole exceeds the free space of the output folder's disk,
end a long run at its last step. The size is the result plan's
(`runtime/result_plan.py`). It is a warning, not an error: the machine that checks may not
be the one that runs. Checking stays cheap: first the bound with every sample at the most
tokens it may keep (`max_length`, else the model's positions), from a line count of the
data; only when that bound would not fit is the data tokenised for the exact size. Where the
model's config or the data cannot be read (CI without checkpoints, `--no-model`), there is
nothing to size and no warning; the run reports the missing file itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import attrs

from expc.compiler.plan import Plan, build_plan
from expc.runtime.result_plan import (DataSize, ResultPlan, human_bytes, max_tokens,
                                      needs_lengths, plan_results, planned_tensors)
from expc.spec import ir
from expc.spec.data_size import count_samples
from expc.spec.diagnostics import Diagnostic, DiagnosticError, error
from expc.spec.model_shape import ModelShape, read_model_shape
from expc.spec.run_format import parse_key

MEMORY_CODE, DISK_CODE = "results-memory", "results-disk"
SHARDS_IN_MEMORY = 3  # rows filling a shard, one shard queued, one being written
_MEMINFO = "/proc/meminfo"


def available_memory() -> int | None:
    """Memory a new process could take now without swapping (Linux's `MemAvailable`),
    else the free physical memory; None where the OS says neither."""
    try:
        with open(_MEMINFO, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(folder: str | Path) -> int | None:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def room_warnings(experiment: ir.Experiment) -> tuple[Diagnostic, ...]:
    """Warnings, at the spec's `output` block, for results that would not fit in the
    memory available or on the output folder's disk; none when they fit or when the model
    or the data cannot be read."""
    memory, disk = available_memory(), free_disk(experiment.output.dir)
    if memory is None and disk is None:
        return ()
    bound = _bound(experiment)
    if bound is None or _fits(experiment, bound[2], memory=memory, disk=disk):
        return ()  # the exact results are no larger than the bound: they fit too
    shape, compiled, _ = bound
    try:
        plan = plan_results(experiment, shape=shape, plan=compiled)
    except DiagnosticError:
        return ()
    found = []
    held = held_bytes(plan, shard_size=experiment.output.shard_size)
    if memory is not None and held > memory:
        found.append(_warning(experiment, plan, MEMORY_CODE,
                              f"{human_bytes(memory)} of memory available; the run holds "
                              f"{human_bytes(held)} of them in memory at once (its reduced "
                              "results until its end, per-sample rows until they fill a "
                              "shard)"))
    if disk is not None and plan.total_bytes > disk:
        found.append(_warning(experiment, plan, DISK_CODE,
                              f"{human_bytes(disk)} free on the disk of "
                              f"`{experiment.output.dir}`"))
    return tuple(found)


def held_bytes(plan: ResultPlan, *, shard_size: int) -> int:
    """The most result bytes the run holds in memory at once: everything but the rows of
    per-sample captures, which stream to shards (`SHARDS_IN_MEMORY` shards at most)."""
    streamed = sum(t.nbytes for t in plan.tensors
                   if t.per_sample and parse_key(t.key).kind == "capture")
    return plan.total_bytes - streamed + min(streamed, SHARDS_IN_MEMORY * shard_size)


def _fits(experiment: ir.Experiment, results: ResultPlan, *, memory: int | None,
          disk: int | None) -> bool:
    held = held_bytes(results, shard_size=experiment.output.shard_size)
    return (memory is None or held <= memory) and (disk is None or results.total_bytes <= disk)


def _bound(experiment: ir.Experiment) -> tuple[ModelShape, Plan, ResultPlan] | None:
    """The model's shape, the plan and the results with every sample at its most tokens
    (from a line count, no tokenising); None when there is nothing to size. Both the held
    bytes and the total only grow with the tensors, so results within this bound fit."""
    try:
        shape = read_model_shape(experiment.model.path, span=experiment.model.span)
    except DiagnosticError:
        return None
    samples = count_samples(experiment.data.source, limit=experiment.data.limit)
    if not samples:
        return None
    plan = build_plan(experiment, n_layers=shape.n_layers)
    longest = max_tokens(experiment, shape) if needs_lengths(plan) else None
    data = DataSize(samples=samples, longest=longest, tokenised=False)
    return shape, plan, ResultPlan(
        tensors=planned_tensors(plan, shape, dtype=experiment.dtype, data=data), data=data)


def _warning(experiment: ir.Experiment, plan: ResultPlan, code: str, room: str) -> Diagnostic:
    found = error(experiment.output.span,
                  f"the results of `{experiment.name}` would take "
                  f"{human_bytes(plan.total_bytes)} ({plan.total_bytes:,} bytes), more than "
                  f"the {room}", code=code,
                  help=(f"`expc compile {experiment.path} --emit plan` lists every tensor "
                        "with its size",
                        "capture fewer layers, reduce `full` captures with `mean` or "
                        "`dataset_mean`, or set `data { limit }`"))
    return attrs.evolve(found, severity="warning")
