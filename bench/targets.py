"""The issue's targets for expc, checked against one run's numbers (reported, never enforced).

Each target names a workload and compares expc's compiled-model row with a bound or with the
peers; where a number is missing (a method skipped or failed, memory not measured) the
verdict says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from bench.results import MethodResult, SuiteResult, WorkloadResult

# Study `variants` (issue 13; `bench/study_variants.py` judges its numbers by these):
VARIANTS_SPEEDUP_FRACTION = 0.9  # N variants in one Hydra run: share of the ideal speed-up
VARIANTS_MEMORY_RATIO = 1.2  # peak RSS of an N-head run over a 1-head run, at most
INTERVENTION_OVERHEAD = 0.05  # an intervention's cost as a share of its head's forward, at most
VARIANTS_TOLERANCE = 1e-4  # max abs logit difference from HF hooks, float32

EXPC = "expc_compiled"
EXPC_NAMES = ("expc_compiled", "expc_run")


@attrs.frozen(kw_only=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: could not be measured in this run


def _methods(workload: WorkloadResult) -> dict[str, MethodResult]:
    return {m.name: m for m in workload.methods if m.status == "ok"}


def _within(bound: float) -> Callable[[WorkloadResult], tuple[str, bool | None]]:
    def judge(workload: WorkloadResult) -> tuple[str, bool | None]:
        expc = _methods(workload).get(EXPC)
        if expc is None or expc.ratio_to_plain is None:
            return "expc not measured", None
        return f"{expc.ratio_to_plain:.2f}×", expc.ratio_to_plain <= bound
    return judge


def _fastest(workload: WorkloadResult) -> tuple[str, bool | None]:
    methods = _methods(workload)
    expc = methods.get(EXPC)
    if expc is None:
        return "expc not measured", None
    peers = {name: m.ratio_to_plain for name, m in methods.items() if name not in EXPC_NAMES}
    best = min(peers, key=peers.get)
    return (f"expc {expc.ratio_to_plain:.2f}× vs best peer {best} {peers[best]:.2f}×",
            expc.ratio_to_plain < peers[best])


def _lowest_memory(workload: WorkloadResult) -> tuple[str, bool | None]:
    methods = {name: m for name, m in _methods(workload).items() if m.rss_peak_mib is not None}
    if EXPC not in methods:
        return "expc peak memory not measured", None
    others = {name: m.rss_peak_mib for name, m in methods.items() if name not in EXPC_NAMES}
    if not others:
        return "no peer's peak memory measured", None
    best = min(others, key=others.get)
    expc = methods[EXPC].rss_peak_mib
    return f"expc {expc:+.0f} MiB vs lowest peer {best} {others[best]:+.0f} MiB", expc < others[best]


TARGETS = (
    ("compute_bound", "expc within 1.05× of the plain forward", _within(1.05)),
    ("compute_bound", "expc has the lowest peak memory of all methods", _lowest_memory),
    ("metrics", "expc with both metrics at every layer ≤ 1.3× of the plain forward", _within(1.3)),
    ("latency_bound", "expc faster than every peer, the plain forward included", _fastest),
    ("deep_selective", "expc ≤ 0.15× of a full forward (pruned past resid_out[1])", _within(0.15)),
)


def verdicts(suite: SuiteResult) -> list[Verdict]:
    """One verdict per target whose workload ran."""
    ran = {w.name: w for w in suite.workloads if w.status == "ok"}
    found = []
    for workload_name, target, judge in TARGETS:
        if workload_name in ran:
            measured, met = judge(ran[workload_name])
            found.append(Verdict(target=f"`{workload_name}`: {target}", measured=measured, met=met))
    return found
