"""The component studies' plumbing: records, markdown, JSON, CLI selection and their arithmetic.

Nothing here times anything: the studies' measurements run in `python -m bench`; these tests
check what is computed from the numbers (ideal speed-ups, growth, verdicts), how a study is
rendered and stored, and which studies the command line runs.
"""

from __future__ import annotations

import json

import attrs
import pytest

import bench.__main__ as bench_main
from bench import study_check_time, study_compile_time, study_hydra, study_memory, study_nproc
from bench.bench_check import generated_spec, time_check
from bench.bench_model import ideal_speedup
from bench.bench_runtime import memory_growth
from bench.report_md import render_markdown, write_reports
from bench.results import (StudyResult, StudyVerdict, SuiteResult, WorkloadResult,
                           suite_from_dict)
from bench.studies import Study, run_study


def _study(**changes) -> StudyResult:
    study = StudyResult(
        name="hydra", description="Hydra against N models", status="ok",
        settings="batch 4 × 256; 5 repetitions", load_average="0.3 / 0.5 / 1.0 → 0.9 / 0.6 / 1.0",
        seconds=12.5, columns=("heads N", "speed-up", "of ideal"),
        rows=(("2", "1.27×", "96%"), ("4", "1.50× | x", "94%")),
        raw={"by_heads": [{"heads": 2, "speedup": 1.27}], "trunk": 4},
        verdicts=(StudyVerdict(target="Hydra with 4 heads ≥ 90% of the ideal speed-up",
                               measured="1.50× of an ideal 1.60×: 94%", met=True),
                  StudyVerdict(target="Hydra with 2 heads ≥ 90% of the ideal speed-up",
                               measured="1.0×", met=False)))
    return attrs.evolve(study, **changes)


def _suite(studies=(_study(),)) -> SuiteResult:
    return SuiteResult(date="2026-11-24 02:00 UTC", command=".venv-bench/bin/python -m bench",
                       quick=False, machine={"CPU": "test cpu"}, workloads=(), seconds=30.0,
                       studies=tuple(studies))


# ---- rendering and storage ---------------------------------------------------------------

def test_a_study_renders_as_its_own_table_after_the_workloads():
    text = render_markdown(_suite())
    section = text.split("### Study `hydra`", 1)[1]
    assert "Hydra against N models." in section
    assert "Settings: batch 4 × 256; 5 repetitions." in section
    assert "0.3 / 0.5 / 1.0 → 0.9 / 0.6 / 1.0; the study took 12 s" in section
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0] == "| heads N | speed-up | of ideal |"
    assert table[1] == "| --- | ---: | ---: |"
    assert table[2] == "| 2 | 1.27× | 96% |"
    assert table[3] == "| 4 | 1.50× \\| x | 94% |"  # a pipe in a cell cannot break the table
    assert len(table) == 4


def test_study_verdicts_join_the_targets_table():
    text = render_markdown(_suite())
    targets = text.split("## Targets", 1)[1].split("## Results", 1)[0]
    assert ("| `hydra`: Hydra with 4 heads ≥ 90% of the ideal speed-up | "
            "1.50× of an ideal 1.60×: 94% | yes |") in targets
    assert "| `hydra`: Hydra with 2 heads ≥ 90% of the ideal speed-up | 1.0× | **no** |" in targets


def test_a_failed_study_shows_its_error_and_no_table():
    failed = StudyResult(name="nproc", description="torchrun", status="failed",
                         note="RuntimeError: torchrun exited 1", seconds=3.0)
    text = render_markdown(_suite([failed]))
    section = text.split("### Study `nproc`", 1)[1]
    assert "**Failed:** RuntimeError: torchrun exited 1" in section
    assert not [line for line in section.splitlines() if line.startswith("| ")]
    assert "None of the targets' workloads or studies ran" in text


def test_studies_round_trip_through_results_json(tmp_path):
    suite = _suite([_study(), _study(name="memory", verdicts=(), rows=())])
    markdown, raw = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    write_reports(suite, markdown_path=markdown, json_path=raw)
    assert suite_from_dict(json.loads(raw.read_text())) == suite


def test_a_results_json_from_before_studies_still_reads(tmp_path):
    raw = tmp_path / "results.json"
    write_reports(_suite([]), markdown_path=tmp_path / "BENCHMARKS.md", json_path=raw)
    data = json.loads(raw.read_text())
    del data["studies"]
    suite = suite_from_dict(data)
    assert suite.studies == ()
    assert "## Component studies" not in render_markdown(suite)


def test_run_study_adds_time_and_load_and_reports_a_crash_as_failed():
    def broken(*, quick: bool) -> StudyResult:
        raise RuntimeError("no torchrun here")

    failed = run_study(Study(name="nproc", description="torchrun", measure=broken), quick=True)
    assert (failed.status, failed.note) == ("failed", "RuntimeError: no torchrun here")
    assert failed.seconds >= 0 and "→" in failed.load_average

    def integer_keys(*, quick: bool) -> StudyResult:
        return _study(raw={"runs": {32: 1.0, 320: 2.0}})

    done = run_study(Study(name="hydra", description="", measure=integer_keys), quick=False)
    assert done.raw == {"runs": {"32": 1.0, "320": 2.0}}  # as results.json will hold it


# ---- the command line's selection of studies ----------------------------------------------

@pytest.fixture
def fake_studies(monkeypatch):
    """Two studies that record how they were called; the real workloads never run."""
    calls: list[tuple[str, bool]] = []

    def study(name: str) -> Study:
        def measure(*, quick: bool) -> StudyResult:
            calls.append((name, quick))
            return _study(name=name, raw={"quick": quick})
        return Study(name=name, description=f"study {name}", measure=measure)

    monkeypatch.setattr(bench_main, "STUDIES", {"alpha": study("alpha"), "beta": study("beta")})
    monkeypatch.setattr(bench_main, "_measure", lambda *a, **k: pytest.fail("a workload ran"))
    return calls


def _run(tmp_path, *argv: str) -> SuiteResult:
    raw = tmp_path / "results.json"
    bench_main.main([*argv, "--json", str(raw), "--markdown", str(tmp_path / "BENCHMARKS.md")])
    return suite_from_dict(json.loads(raw.read_text()))


def test_all_studies_run_by_default_and_quick_reaches_them(tmp_path, fake_studies):
    suite = _run(tmp_path, "--no-workloads", "--quick")
    assert fake_studies == [("alpha", True), ("beta", True)]
    assert [s.name for s in suite.studies] == ["alpha", "beta"]
    assert "### Study `beta`" in (tmp_path / "BENCHMARKS.md").read_text()


def test_studies_names_some_and_no_studies_none(tmp_path, fake_studies):
    suite = _run(tmp_path, "--no-workloads", "--studies", "beta")
    assert fake_studies == [("beta", False)]
    assert [s.name for s in suite.studies] == ["beta"]
    fake_studies.clear()
    assert _run(tmp_path, "--no-workloads", "--no-studies").studies == ()
    assert fake_studies == []


def test_append_keeps_the_studies_and_workloads_not_rerun(tmp_path, fake_studies):
    workload = WorkloadResult(name="compute_bound", description="8 layers", status="skipped",
                              note="not measured here")
    earlier = attrs.evolve(_suite([_study(name="alpha")]), workloads=(workload,))
    write_reports(earlier, markdown_path=tmp_path / "BENCHMARKS.md",
                  json_path=tmp_path / "results.json")
    suite = _run(tmp_path, "--no-workloads", "--append", "--studies", "beta")
    assert fake_studies == [("beta", False)]
    assert [s.name for s in suite.studies] == ["alpha", "beta"]
    assert suite.studies[0] == earlier.studies[0]
    assert suite.workloads == earlier.workloads
    assert suite.command.splitlines()[0] == earlier.command
    assert "--no-workloads --append --studies beta" in suite.command.splitlines()[-1]


def test_append_keeps_what_another_suite_wrote_meanwhile(tmp_path, fake_studies, monkeypatch):
    raw = tmp_path / "results.json"
    write_reports(_suite([]), markdown_path=tmp_path / "BENCHMARKS.md", json_path=raw)
    other = WorkloadResult(name="metrics", description="metrics", status="skipped", note="other")

    def measure_while_another_suite_appends(*, quick: bool) -> StudyResult:
        meanwhile = attrs.evolve(suite_from_dict(json.loads(raw.read_text())), workloads=(other,))
        write_reports(meanwhile, markdown_path=tmp_path / "BENCHMARKS.md", json_path=raw)
        return _study(name="beta")

    monkeypatch.setitem(bench_main.STUDIES, "beta", Study(
        name="beta", description="", measure=measure_while_another_suite_appends))
    suite = _run(tmp_path, "--no-workloads", "--append", "--studies", "alpha", "beta")
    assert suite.workloads == (other,)
    assert [s.name for s in suite.studies] == ["alpha", "beta"]


def test_an_unknown_study_is_a_usage_error(tmp_path, fake_studies):
    with pytest.raises(SystemExit) as exit_info:
        _run(tmp_path, "--studies", "gamma")
    assert exit_info.value.code == 2


# ---- what each study computes from its numbers --------------------------------------------

def test_ideal_hydra_speedup_counts_shared_and_per_head_layers():
    # 4 heads over 8 layers, 4 shared: 32 layers of work become 4 + 4 * 4 = 20
    assert ideal_speedup(4, 8, 4) == pytest.approx(32 / 20)
    assert ideal_speedup(1, 8, 4) == pytest.approx(1.0)
    # lm_head worth 2 layers runs in every head, so it is not shared: 4 * 10 / (4 + 16 + 8)
    assert ideal_speedup(4, 8, 4, lm_head_layers=2.0) == pytest.approx(40 / 28)


def _hydra_numbers(heads: int, speedup: float) -> dict:
    ideal = ideal_speedup(heads, 8, 4)
    return {"heads": heads, "ideal_speedup": ideal, "fraction_of_ideal": speedup / ideal,
            "ideal_with_lm_head": ideal, "fraction_of_ideal_with_lm_head": speedup / ideal,
            "speedup_vs_full_forwards": {"median_ratio": speedup, "ratios": [speedup],
                                         "median_s_first": 0.8, "median_s_second": 0.5}}


def test_hydra_verdict_is_met_from_ninety_percent_of_the_ideal():
    ideal = ideal_speedup(4, 8, 4)
    assert study_hydra.verdict(_hydra_numbers(4, 0.9 * ideal)).met is True
    missed = study_hydra.verdict(_hydra_numbers(4, 0.89 * ideal))
    assert missed.met is False and "89%" in missed.measured
    row = study_hydra.row_cells(_hydra_numbers(4, 1.5))
    assert row[:4] == ("4", "800 ms", "500 ms", "1.50× (1.50–1.50)")
    assert len(row) == len(study_hydra.COLUMNS)


def test_nproc_rows_give_tokens_per_second_of_the_batch_loop():
    ratio = {"median": 1.25, "min": 1.0, "max": 1.5}
    row = study_nproc.row_cells("--nproc 2, 1 thread each",
                                {"run_s": 2.0, "wall_s": 9.0, "speedup_run": ratio,
                                 "speedup_wall": ratio}, tokens=3000)
    assert row == ("--nproc 2, 1 thread each", "2.00 s", "1,500", "9.00 s", "1.25× (1.00–1.50)",
                   "1.25× (1.00–1.50)")
    assert len(row) == len(study_nproc.COLUMNS)


def test_compile_time_study_on_small_models(monkeypatch):
    monkeypatch.setitem(study_compile_time.LAYERS, "quick", (1, 2))
    monkeypatch.setitem(study_compile_time.REPEATS, "quick", 1)
    result = study_compile_time.measure(quick=True)
    assert [row[0] for row in result.rows] == ["1", "2"]
    assert all(len(row) == len(result.columns) for row in result.rows)
    assert set(result.raw["by_layers"]) == {1, 2} and result.verdicts == ()
    assert "growth exponent" in result.note


def test_check_time_study_checks_without_torch(monkeypatch):
    monkeypatch.setattr(study_check_time, "SIZES", (50,))
    monkeypatch.setitem(study_check_time.REPEATS, "quick", 1)
    result = study_check_time.measure(quick=True)
    assert len(result.rows) == 2 and all(len(r) == len(result.columns) for r in result.rows)
    assert result.raw["torch_imported_by_check"] is False
    assert [v.met for v in result.verdicts][-1] is True


def test_compile_growth_exponent_reads_linear_and_quadratic_growth():
    assert study_compile_time.growth_exponent({4: 0.1, 64: 1.6}) == pytest.approx(1.0)
    assert study_compile_time.growth_exponent({4: 0.1, 16: 0.4, 64: 25.6}) == pytest.approx(2.0)
    assert study_compile_time.growth_exponent({4: 0.1}) is None


def test_compile_verdict_only_where_32_layers_were_compiled():
    seconds = {"wall_s": 1.2, "cpu_s": 1.1, "repeats": 1}
    found = {4: {"resid": seconds, "resid_metrics": seconds}}
    assert study_compile_time.verdicts(found) == ()
    slow = {"wall_s": 2.5, "cpu_s": 2.4, "repeats": 1}
    (verdict,) = study_compile_time.verdicts({32: {"resid": slow, "resid_metrics": slow}})
    assert verdict.met is False and verdict.measured == "2.50 s wall"
    assert study_compile_time.row_cells(32, {"resid": slow, "resid_metrics": seconds})[3] == "78 ms"


def test_check_verdicts_and_time_per_thousand_lines():
    assert study_check_time.per_thousand_lines(0.5, 5000) == pytest.approx(0.1)
    cli_fast, big_slow, torch_used = study_check_time.verdicts(
        cli_wall=0.2, largest={"lines": 5022, "wall_s": 1.5}, torch_imported=True)
    assert cli_fast.met is True
    assert big_slow.met is False and "5,022 lines" in big_slow.measured
    assert torch_used.met is False and torch_used.measured == "torch imported"


def test_generated_specs_reach_their_size_and_check_clean():
    text = generated_spec(50)
    assert text.count("\n") >= 50
    _, _, lines = time_check(50, 1)  # raises if the generated spec has diagnostics
    assert lines == text.count("\n")


def _memory_run(peak: float, results: float) -> dict:
    return {"peak_rss_mib": peak, "results_mib": results, "peak_less_results_mib": peak - results}


def test_memory_growth_discounts_the_results_and_judges_the_mean():
    small = _memory_run(400.0, 4.0)  # 396 MiB besides the results
    assert memory_growth(small, _memory_run(476.0, 40.0)) == pytest.approx(436 / 396 - 1)
    flat, grown = _memory_run(430.0, 40.0), _memory_run(900.0, 400.0)  # 390 and 500 MiB
    found = {"samples": [32, 320], "rows": {
        "mean": {"runs": {32: small, 320: flat}, "growth": memory_growth(small, flat)},
        "full": {"runs": {32: small, 320: grown}, "growth": memory_growth(small, grown)}}}
    verdict = study_memory.verdict(found)
    assert verdict.met is True and verdict.measured == "-1.5% (32 → 320 samples)"
    found["rows"]["mean"] = found["rows"]["full"]
    assert study_memory.verdict(found).met is False
    row = study_memory.row_cells("full", found["rows"]["full"], (32, 320))
    assert row == ("full", "400 MiB", "4.0 MiB", "396 MiB", "900 MiB", "400.0 MiB", "500 MiB",
                   "+26.3%")
