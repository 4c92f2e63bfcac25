"""Render a `SuiteResult` as BENCHMARKS.md (for people) and results.json (raw numbers).

The markdown says what was run (exact commands), where (machine, versions, date), and for
every workload one table of medians and paired ratios, then one section per component study
(its own table and targets). Nothing is interpreted here beyond formatting: a method that was
skipped or failed, or a study that failed, shows its reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs

from bench.results import MethodResult, StudyResult, SuiteResult, WorkloadResult
from bench.targets import verdicts

SETUP_COMMAND = "bash bench/setup_env.sh"
HEADER = ("| method | time / batch | tokens/s | ratio to plain (min–max) | RSS Δ set-up | "
          "peak RSS Δ | peak vs plain | max abs diff vs reference | note |")
RULE = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
DASH = "—"

INTRO = """\
Every comparison below is measured side by side in one run, on the same checkpoint and the
same batches (float32, CPU, {threads} torch threads). The machine is shared and noisy, so
absolute times are context only; compare methods by the **paired ratio**: in each repetition
every method runs the whole workload once (in an order shuffled anew each repetition), its
time is divided by the plain forward's time in that repetition, and the table shows the
median over repetitions (with the smallest and largest ratio).

- **time / batch** and **tokens/s**: median pass time over repetitions, divided by the
  number of batches, and real (non-padding) tokens per second.
- **RSS Δ set-up** / **peak RSS Δ**: measured in a fresh process per method, above the
  process's RSS after importing torch + transformers and building the data: RSS after
  loading and wrapping the model, and peak RSS over one full pass. **peak vs plain**
  divides by the plain forward's peak.
- **max abs diff vs reference**: largest difference between what the method computed and a
  float64 reference on the same batches: for captures, its per-sample masked means of
  `resid_out[L]` (raw block output, padding excluded) against transformers in double
  precision with a hand-written masked mean; for metrics, its `channel_contribution` /
  `kv_head_contribution` scores against the same formulas written out in float64. Tools
  that disagree beyond float32 rounding (~1e-6 relative) are a finding, not noise.
- **Differences under ~5%** are within what separates two loaded copies of one model on
  this machine: peers that do more work than the plain forward have measured 0.93–0.98× of
  it in some runs. Read ratios close to 1 as "the same", not as a ranking.
- **Machine load**: each workload and study shows the machine's load average while it ran.
  Above ~2 on this 2-core machine, other processes compete for the cores, and a 2-thread torch op stalls
  whenever one of its threads is descheduled: times inflate several-fold and single
  repetitions swing widely (see the min–max spread). Trust only large ratio gaps from such a
  run, and re-run on an idle machine (`--append --workloads NAME --no-studies` re-measures
  one workload, `--append --no-workloads --studies NAME` one study).
"""


NOTES = """\
- Every method runs the model's full forward, the way its documentation shows (the causal
  LM head included for the Llama checkpoints); expc's compiled graph drops what no capture
  needs. TransformerLens (`stop_at_layer`) and nnsight (`tracer.stop()`) can also stop early
  when the user asks; those variants are not measured here.
- TransformerLens wraps BERT only as a masked LM whose head the MiniLM checkpoint lacks; its
  MiniLM row stops after the last block (`stop_at_layer=6`) so it does not pay for that head.
- Decoder batches are right-padded random token ids; the masked means exclude padding.
- `expc run` is timed end to end (load, tokenise, compile, run, write the run folder) where
  every other row times the forward loop alone.
"""

STUDIES_INTRO = """\
Each study measures one part of expc on its own, in the same run as the workloads (same
machine, same load); `python -m bench --no-workloads --append --studies NAME` re-measures one
and keeps everything else. Its table says what was compared; ratios are medians over
repetitions of paired (same-repetition) ratios, and its targets are in the table above.
"""


def targets_section(suite: SuiteResult) -> str:
    """The workloads' targets (from `bench.targets`), then each study's own verdicts."""
    rows = ["| target | measured | met |", "| --- | --- | :---: |"]
    marks = {True: "yes", False: "**no**", None: "not measured"}
    found = [(v.target, v.measured, v.met) for v in verdicts(suite)]
    found += [(f"`{study.name}`: {v.target}", v.measured, v.met)
              for study in suite.studies for v in study.verdicts]
    if not found:
        return "None of the targets' workloads or studies ran in this suite.\n"
    rows += [f"| {target} | {_cell(measured)} | {marks[met]} |" for target, measured, met in found]
    return "\n".join(rows) + "\n"


def _fmt(value: float | None, pattern: str) -> str:
    return DASH if value is None else pattern.format(value)


def _time(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def _ratio(method: MethodResult) -> str:
    if method.ratio_to_plain is None:
        return DASH
    return f"{method.ratio_to_plain:.2f}× ({method.ratio_min:.2f}–{method.ratio_max:.2f})"


def _versus_plain(method: MethodResult, plain: MethodResult | None) -> str:
    if method.rss_peak_mib is None or plain is None or not plain.rss_peak_mib:
        return DASH
    return f"{method.rss_peak_mib / plain.rss_peak_mib:.2f}×"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def method_row(method: MethodResult, plain: MethodResult | None) -> str:
    if method.status != "ok":
        note = f"{method.status}: {method.note}"
        return f"| {_cell(method.label)} | {' | '.join([DASH] * 7)} | {_cell(note)} |"
    cells = [
        _cell(method.label),
        _time(method.seconds_per_batch),
        _fmt(method.tokens_per_s, "{:,.0f}"),
        _ratio(method),
        _fmt(method.rss_setup_mib, "{:+.0f} MiB"),
        _fmt(method.rss_peak_mib, "{:+.0f} MiB"),
        _versus_plain(method, plain),
        _fmt(method.max_abs_diff, "{:.1e}"),
        _cell(method.note),
    ]
    return "| " + " | ".join(cells) + " |"


def workload_section(workload: WorkloadResult) -> str:
    lines = [f"### `{workload.name}`", "", workload.description + "."]
    if workload.status != "ok":
        lines += ["", f"**Skipped:** {workload.note}", ""]
        return "\n".join(lines)
    lines += ["", f"Data: {workload.shape} (batches × [batch × padded length]), "
                  f"{workload.real_tokens:,} real tokens; {workload.repetitions} repetitions."]
    if workload.load_average:
        lines += ["", f"Machine load average (1 / 5 / 15 min) at start → end: {workload.load_average}."]
    if workload.note:
        lines += ["", f"Note: {workload.note}."]
    lines += ["", HEADER, RULE]
    plain = next((m for m in workload.methods if m.name == "plain" and m.status == "ok"), None)
    lines += [method_row(method, plain) for method in workload.methods]
    return "\n".join(lines) + "\n"


def study_section(study: StudyResult) -> str:
    lines = [f"### Study `{study.name}`", "", study.description + "."]
    if study.settings:
        lines += ["", f"Settings: {study.settings}."]
    if study.load_average:
        lines += ["", f"Machine load average (1 / 5 / 15 min) at start → end: "
                      f"{study.load_average}; the study took {study.seconds:.0f} s."]
    if study.status != "ok":
        lines += ["", f"**{study.status.capitalize()}:** {study.note}", ""]
        return "\n".join(lines)
    if study.note:
        lines += ["", f"Note: {study.note}."]
    lines += ["", "| " + " | ".join(_cell(c) for c in study.columns) + " |",
              "| " + " | ".join(["---"] + ["---:"] * (len(study.columns) - 1)) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in study.rows]
    return "\n".join(lines) + "\n"


def render_markdown(suite: SuiteResult, *, threads: int = 2) -> str:
    machine = "\n".join(f"- {key}: {value}" for key, value in suite.machine.items())
    sections = "\n".join(workload_section(workload) for workload in suite.workloads)
    if suite.studies:
        sections += "\n## Component studies\n\n" + STUDIES_INTRO + "\n" + "\n".join(
            study_section(study) for study in suite.studies)
    mode = ("quick suite: smaller workloads than their descriptions (see each Data line) and "
            "studies, no memory probes" if suite.quick else "full suite")
    return f"""# Benchmarks

Last measured {suite.date} ({mode}; the last command took {suite.seconds:.0f} s). Raw numbers: `bench/results.json`.

## Commands

```
{SETUP_COMMAND}          # once: .venv-bench with expc, TransformerLens and nnsight
{suite.command}
```

## Machine

{machine}

## How to read the tables

{INTRO.format(threads=threads)}
## Targets (from the issue; reported, not enforced)

{targets_section(suite)}
## Results

{NOTES}
{sections}"""


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_reports(suite: SuiteResult, *, markdown_path: Path, json_path: Path) -> None:
    """Write BENCHMARKS.md and the raw-number JSON (each atomically)."""
    _write_atomic(markdown_path, render_markdown(suite))
    _write_atomic(json_path, json.dumps(attrs.asdict(suite), indent=2) + "\n")
