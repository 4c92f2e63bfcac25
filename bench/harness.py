"""Side-by-side measurement of capture methods on one workload: time, memory, agreement.

The machine is shared and noisy, so absolute times are context only; the headline number is
the paired ratio. Within each repetition every method runs the whole workload once, in an
order shuffled anew each repetition (seeded by its number, so reruns repeat it), and its
time is divided by the plain forward's time of the same repetition; the reported ratio is
the median of those per-repetition ratios. A shuffle, not a rotation: rotating keeps every
method behind the same neighbour, and a neighbour that leaves the process's memory in some
state (`expc run` in-process, a wrapper's caches) would then bias the one behind it.

Memory is measured in a fresh process per method (`bench.rss_probe`, two at a time), since a process's
high-water mark only grows: the probe notes its RSS after imports and data, then loads and
wraps the model and runs every batch, and reports the RSS after set-up and the peak RSS,
both above that starting point.

Agreement: every method's outputs are compared key by key with a float64 reference:
transformers' forward in double precision, the per-sample masked means of the raw block
outputs in float64, and on a workload with metrics the bench's own formulas
(`bench.metric_formulas`) on the module inputs of that float64 forward.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence

import torch

from bench.metric_formulas import RESID_OUT, output_key
from bench.peers import (Method, Runner, hook_metric_inputs, masked_mean, over_batches,
                         running_metrics)
from bench.results import MethodResult, WorkloadResult
from bench.workloads import REPO_ROOT, Batch, Workload

log = logging.getLogger(__name__)

BASELINE = "plain"
TORCH_THREADS = 2


def quiet_libraries() -> None:
    """Torch on the benchmark's thread count; no progress bars or load reports from transformers."""
    torch.set_num_threads(TORCH_THREADS)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def run_order(items: Sequence, repetition: int) -> list:
    """The order the methods run in during one repetition: a shuffle seeded by its number."""
    return random.Random(repetition).sample(list(items), len(items))


def paired_ratios(times: Mapping[str, Sequence[float]], *, baseline: str = BASELINE,
                  ) -> dict[str, tuple[float, float, float]]:
    """Per method: (median, min, max) over repetitions of its time / the baseline's time."""
    base = times[baseline]
    summary = {}
    for name, method_times in times.items():
        if len(method_times) != len(base):
            raise ValueError(f"{name} has {len(method_times)} repetitions, {baseline} has {len(base)}")
        ratios = [t / b for t, b in zip(method_times, base)]
        summary[name] = (statistics.median(ratios), min(ratios), max(ratios))
    return summary


def max_abs_difference(outputs: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                       ) -> float | None:
    """Largest |output - reference| over every output key; None when nothing was computed."""
    by_kind = max_abs_difference_by_kind(outputs, reference)
    return max(by_kind.values()) if by_kind else None


def max_abs_difference_by_kind(outputs: Mapping[str, torch.Tensor],
                               reference: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Largest |output - reference| per kind of key (`resid_out/3` is of kind `resid_out`)."""
    if not outputs:
        return {}
    if set(outputs) != set(reference):
        raise ValueError(f"output keys {sorted(outputs)} differ from the reference's "
                         f"{sorted(reference)}")
    by_kind: dict[str, float] = {}
    for key in reference:
        kind = key.split("/", 1)[0]
        difference = float((outputs[key].double() - reference[key]).abs().max())
        by_kind[kind] = max(by_kind.get(kind, 0.0), difference)
    return by_kind


def reference_outputs(workload: Workload) -> dict[str, torch.Tensor]:
    """The float64 reference of every output key (see the module docstring)."""
    model = workload.load_model(dtype=torch.float64)
    model.config.tie_last_hidden_states = False
    metrics = running_metrics(model, workload)
    state: dict = {"mask": None}
    hook_metric_inputs(metrics, state)

    def per_batch(batch: Batch) -> dict[str, torch.Tensor]:
        state["mask"] = batch.attention_mask
        hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       output_hidden_states=True).hidden_states
        return {output_key(RESID_OUT, layer): masked_mean(hidden[layer + 1], batch.attention_mask)
                for layer in workload.layers}  # each [B, H]

    with torch.no_grad():
        return over_batches(per_batch, metrics)(workload.batches)


def agreement_note(outputs: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> str:
    """Per kind, when outputs hold several kinds: "max abs diff: resid_out 7e-07, ..."."""
    by_kind = max_abs_difference_by_kind(outputs, reference)
    if len(by_kind) < 2:
        return ""
    return "max abs diff: " + ", ".join(f"{kind} {value:.1e}" for kind, value in by_kind.items())


def time_repetitions(runners: Mapping[str, Runner], batches: Sequence[Batch], *,
                     repetitions: int) -> dict[str, list[float]]:
    """Seconds per whole-workload pass, per method and repetition, in `run_order`."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for repetition in range(repetitions):
            for name in run_order(list(runners), repetition):
                start = time.perf_counter()
                runners[name](batches)
                times[name].append(time.perf_counter() - start)
    return times


def probe_memory(workload_name: str, method_name: str, *, quick: bool) -> dict[str, float]:
    """Run `bench.rss_probe` in a fresh interpreter; {"setup_mib": ..., "peak_mib": ...}."""
    command = [sys.executable, "-m", "bench.rss_probe", workload_name, method_name]
    if quick:
        command.append("--quick")
    # Probes run side by side (`probe_all`): a spinning OpenMP wait would make them fight over
    # the cores; the policy changes time, never a process's peak RSS.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PROBES_AT_ONCE = 2  # a probe is mostly single-threaded imports: two share the 2 cores well


def probe_all(workload_name: str, method_names: Sequence[str], *, quick: bool,
              ) -> dict[str, dict]:
    """`probe_memory` for each method, `PROBES_AT_ONCE` processes at a time (a process's own
    peak RSS does not depend on its neighbours); a failed probe gives {"error": why}."""

    def probe(name: str) -> dict:
        log.info("%s: memory probe for %s", workload_name, name)
        try:
            return probe_memory(workload_name, name, quick=quick)
        except RuntimeError as exc:
            return {"error": str(exc)}

    with concurrent.futures.ThreadPoolExecutor(max_workers=PROBES_AT_ONCE) as pool:
        return dict(zip(method_names, pool.map(probe, method_names)))


def _failure(exc: BaseException) -> str:
    log.debug("method failed:\n%s", "".join(traceback.format_exception(exc)))
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}"[:300]


def run_workload(workload: Workload, methods: Sequence[Method], *, repetitions: int, quick: bool,
                 measure_memory: bool = True) -> WorkloadResult:
    """Measure every available method on `workload`; a method that fails is recorded, not fatal."""
    reference = reference_outputs(workload)
    results: dict[str, MethodResult] = {}
    runners: dict[str, Runner] = {}
    diffs: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for method in methods:
        reason = method.unavailable_reason(workload)
        if reason:
            results[method.name] = MethodResult(name=method.name, label=method.label,
                                                status="skipped", note=reason)
            continue
        log.info("%s: setting up %s", workload.name, method.name)
        try:
            runner = method.build(workload)
            with torch.no_grad():  # the agreement pass doubles as the warm-up
                outputs = runner(workload.batches)
            diffs[method.name] = max_abs_difference(outputs, reference)
            notes[method.name] = agreement_note(outputs, reference)
        except Exception as exc:  # a tool that cannot run this workload is a finding
            results[method.name] = MethodResult(name=method.name, label=method.label,
                                                status="failed", note=_failure(exc))
            continue
        runners[method.name] = runner
    if BASELINE not in runners:
        raise RuntimeError(f"the plain forward failed on {workload.name}: {results[BASELINE].note}")

    log.info("%s: timing %d methods × %d repetitions", workload.name, len(runners), repetitions)
    times = time_repetitions(runners, workload.batches, repetitions=repetitions)
    ratios = paired_ratios(times)
    runners.clear()  # free the models before the memory probes

    measured = [method for method in methods if method.name not in results]
    probes = (probe_all(workload.name, [method.name for method in measured], quick=quick)
              if measure_memory else {})
    for method in measured:
        memory = probes.get(method.name, {})
        note = "; ".join(filter(None, [notes[method.name], memory.pop("error", "")]))
        seconds = statistics.median(times[method.name])
        median_ratio, low, high = ratios[method.name]
        results[method.name] = MethodResult(
            name=method.name, label=method.label, status="ok", note=note,
            seconds_per_batch=seconds / len(workload.batches),
            tokens_per_s=workload.real_tokens / seconds,
            ratio_to_plain=median_ratio, ratio_min=low, ratio_max=high,
            rss_setup_mib=memory.get("setup_mib"), rss_peak_mib=memory.get("peak_mib"),
            max_abs_diff=diffs[method.name], repetition_seconds=tuple(times[method.name]),
        )
    return WorkloadResult(
        name=workload.name, description=workload.description, status="ok",
        shape=workload.shape_text, real_tokens=workload.real_tokens,
        n_batches=len(workload.batches), repetitions=repetitions,
        methods=tuple(results[method.name] for method in methods),
    )
