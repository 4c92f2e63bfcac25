"""The issue's targets for expc, checked against one run's numbers (reported, never enforced).

Each target names a workload and compares expc's compiled-model row with a bound or with the
peers; where a number is missing (a method skipped or failed, memory not measured) the
verdict says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from bench.results import MethodResult, SuiteResult, WorkloadResult

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
