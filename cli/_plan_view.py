"""`expc compile FILE --emit plan` as text or JSON: the result tensors a run will write.

The plan itself is `expc.runtime.result_plan`; this module only lays it out: one line per
key (shape, dtype, bytes), the total in binary units and in exact bytes, and what was read
of the data to size it.
"""

from __future__ import annotations

import json

from expc.runtime.result_plan import ResultPlan, human_bytes
from expc.spec import ir


def data_words(plan: ResultPlan) -> str:
    """What the plan read of the data, and why."""
    data = plan.data
    if data.tokenised:
        return (f"data read and tokenised: {data.samples:,} samples, the longest "
                f"{data.longest:,} tokens (they size the per-sample keys and sequence axes)")
    return (f"data read: {data.samples:,} samples (they size the per-sample keys; not "
            "tokenised: no tensor has a sequence axis)")


def total_words(plan: ResultPlan) -> str:
    return f"{human_bytes(plan.total_bytes)} ({plan.total_bytes:,} bytes)"


def plan_text(plan: ResultPlan, experiment: ir.Experiment) -> str:
    rows = [(t.key, str(list(t.shape)), t.dtype, f"{t.nbytes:,}") for t in plan.tensors]
    header = ("key", "shape", "dtype", "bytes")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    lines = [f"# plan of experiment `{experiment.name}` ({experiment.path})",
             f"# {data_words(plan)}"]
    for key, shape, dtype, size in (header, *rows):
        lines.append(f"{key:<{widths[0]}}  {shape:<{widths[1]}}  {dtype:<{widths[2]}}  {size:>{widths[3]}}")
    lines.append(f"total: {len(plan.tensors):,} tensors, {total_words(plan)}")
    return "\n".join(lines) + "\n"


def plan_json(plan: ResultPlan, experiment: ir.Experiment) -> str:
    data = plan.data
    return json.dumps({
        "experiment": experiment.name, "spec": experiment.path,
        "data": {"samples": data.samples, "longest": data.longest, "tokenised": data.tokenised},
        "tensors": [{"key": t.key, "shape": list(t.shape), "dtype": t.dtype, "bytes": t.nbytes,
                     "per_sample": t.per_sample} for t in plan.tensors],
        "total_bytes": plan.total_bytes, "total": human_bytes(plan.total_bytes),
    }, indent=2) + "\n"
