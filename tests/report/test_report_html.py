"""`expc report` on synthetic run folders: sections and figures, escaping of user strings,
partial runs, empty sections left out, summary.md, the CLI's exit codes.

Building a report draws a dozen matplotlib figures, so each kind of run is reported once per
module and its HTML shared by the tests that read it.
"""

from __future__ import annotations

import base64
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from expc.cli import main
from expc.report.build import build_report, write_report

INJECTED = "<script>alert(1)</script>"
METRICS = ("l2_norm", "channel_contribution", "kv_head_contribution", "layernorm_contribution",
           "iterative_channel")


@pytest.fixture(scope="module")
def complete(write_run, tmp_path_factory):
    """A complete Hydra run (4 layers, trunk 2, 3 heads), its report written to disk."""
    run = write_run(tmp_path_factory.mktemp("complete") / "run")
    files = write_report(run)
    return run, files, files.html.read_text(encoding="utf-8"), files.summary.read_text()


@pytest.fixture(scope="module")
def injected(write_run, tmp_path_factory):
    """A failed run with `<script>` in its folder name, model path, data source, spec path,
    spec text (via the source), error message, a tensor's meaning (e.g. a prompt) and a key
    name (which reaches figure titles)."""
    def markup_key(tensors):  # two layers: a plot (a single layer would be a table row)
        tensors["capture/<script>_0"] = tensors["capture/resid_out_0"] + 1.0
        tensors["capture/<script>_1"] = tensors["capture/resid_out_1"] + 1.0

    folder = tmp_path_factory.mktemp("injected") / "run<script>alert(1)<_script>"
    run = write_run(folder, status="failed", model_path=f"m{INJECTED}",
                    source=f"d{INJECTED}", spec_path=f"s{INJECTED}.exp",
                    error_message=f"prompt 3 {INJECTED} is empty", edit=markup_key)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["tensors"]["capture/resid_out_0"]["meaning"] = f"prompt: {INJECTED}"
    (run / "manifest.json").write_text(json.dumps(manifest))
    html, summary, _ = build_report(run)
    return html, summary


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


def test_complete_run_has_every_section_each_with_its_figures(complete, page_parser):
    run, files, html, _ = complete
    assert files.html == run / "report.html" and files.summary == run / "summary.md"
    page = page_parser(html)
    # run: Hydra diagram; captures: norms, cosine, head disagreement; model-wide: embed and
    # final_norm; importance: one per metric; attention: one viewer for every pattern
    assert page.sections == {"run": 1, "captures": 3, "model-wide": 2,
                             "importance": len(METRICS), "attention": 1}
    assert files.sections == ("Run", "Captures", "Model-wide captures", "Importance",
                              "Attention patterns")
    assert page.scripts == 0


def test_every_figure_is_inline_svg_without_external_references(complete, page_parser):
    html = complete[2]
    figures = re.findall(r"<figure>(.*?)</figure>", html, flags=re.DOTALL)
    # every figure but the attention viewer (`<figure id=...>`, drawn by its script)
    assert len(figures) == 11 and all(f.startswith("<svg") for f in figures)
    assert all(u.startswith(("#", "data:")) for u in page_parser(html).urls)
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html


def test_report_draws_hydra_heads_and_names_every_metric(complete, page_parser):
    _, _, html, summary = complete
    text = " ".join(page_parser(html).text)
    for metric in METRICS:
        assert metric in text and metric in summary
    for head in range(3):
        assert f"head {head}: layers 2-3" in html  # the Hydra diagram's boxes
    assert "head2/layers.3.mlp.down_proj" in text  # a pruning candidate row
    assert "capture/attn_out_1.mask" in text  # the key table


def test_spec_text_is_highlighted(complete):
    html = complete[2]
    assert '<span class="kw">experiment</span>' in html
    assert '<span class="c"># A synthetic Hydra run for the report tests.</span>' in html
    assert '<span class="s">&quot;builtin:tiny-llama&quot;</span>' in html


def test_injected_script_comes_out_escaped(injected, page_parser):
    html, summary = injected
    page = page_parser(html)
    own = re.compile(r'<script (?:type="application/json" id="attn-data" )?data-expc="[a-z-]+">'
                     r".*?</script>", re.DOTALL)
    assert "<script" not in own.sub("", html) and page.scripts == 0  # only the viewer's own
    text = " ".join(page.text)
    for shown in (f"m{INJECTED}", f"d{INJECTED}", f"s{INJECTED}.exp",
                  f"prompt 3 {INJECTED} is empty", f"prompt: {INJECTED}"):
        assert shown in text  # shown to the reader as text
    assert html.count("&lt;script&gt;") >= 8
    assert ">&lt;script&gt;</text>" in html  # a figure title, escaped by the SVG writer
    assert "<script" not in summary and "&lt;script&gt;" in summary


def test_failed_run_is_marked_and_shows_its_error(injected):
    html, summary = injected
    assert 'class="banner failed"' in html
    assert "status: **failed**" in summary and "is empty" in summary


def test_complete_run_has_no_banner(complete):
    assert 'class="banner' not in complete[2]
    assert "status: **complete**" in complete[3]


def test_running_run_without_results_reports_what_it_has(write_run, tmp_path, page_parser):
    run = write_run(tmp_path / "run", status="running")
    assert not (run / "results.safetensors").exists()
    html, summary, titles = build_report(run)
    assert titles == ("Run",) and page_parser(html).sections == {"run": 1}
    assert 'class="banner running"' in html and "still running" in html
    assert f"{run / 'checkpoint'} (1 batches done)" in " ".join(page_parser(html).text)
    assert "status: **running**" in summary


def test_empty_sections_are_left_out(write_run, tmp_path, page_parser):
    def only_kv_heads(tensors):
        for key in [k for k in tensors if not k.startswith(("meta/", "importance/kv_head"))]:
            del tensors[key]

    run = write_run(tmp_path / "run", edit=only_kv_heads)
    html, summary, titles = build_report(run)
    assert titles == ("Run", "Importance")
    assert page_parser(html).sections == {"run": 1, "importance": 1}
    assert "- importance: kv_head_contribution" in summary


def test_run_without_hydra_split_draws_one_path(write_run, tmp_path, page_parser):
    def captures_only(tensors):
        for key in [k for k in tensors if k.startswith("importance/")]:
            del tensors[key]

    run = write_run(tmp_path / "run", trunk=4, heads=1, edit=captures_only)
    html, _, titles = build_report(run)
    assert "no Hydra split" in html
    assert page_parser(html).sections == {"run": 1, "captures": 2, "model-wide": 2,
                                          "attention": 1}
    assert titles == ("Run", "Captures", "Model-wide captures", "Attention patterns")


def test_summary_lists_status_model_and_candidates(complete):
    summary = complete[3]
    assert summary.startswith("# expc report: synthetic\n")
    assert "builtin:tiny-llama (llama, 4 layers, trunk 2, heads 3)" in summary
    assert "| kv_head_contribution | layers.0.self_attn.o_proj | kv head |" in summary


def test_candidates_download_link_holds_the_lowest_scores(complete):
    run, _, html, _ = complete
    payload = re.search(r'download="pruning_candidates.json" '
                        r'href="data:application/json;base64,([A-Za-z0-9+/=]+)"', html)
    rows = json.loads(base64.b64decode(payload.group(1)))
    tensors = load_file(str(run / "results.safetensors"))
    row = next(r for r in rows
               if r["metric"] == "l2_norm" and r["module"] == "layers.1.mlp.down_proj")
    score = tensors["importance/l2_norm/layers.1.mlp.down_proj/score"]
    assert [c["index"] for c in row["lowest"]] == torch.sort(score).indices[:8].tolist()
    assert [c["score"] for c in row["lowest"]] == pytest.approx(
        torch.sort(score).values[:8].tolist())
    iterative = next(r for r in rows if r["metric"] == "iterative_channel")
    order = tensors[f"importance/iterative_channel/{iterative['module']}/"
                    "channels_importance_ascending"]
    assert [c["index"] for c in iterative["lowest"]] == order[:8].tolist()
    kv = [r for r in rows if r["metric"] == "kv_head_contribution"]
    assert len(kv) == 2 + 2 * 3 and all(r["unit"] == "kv head" for r in kv)


def test_cli_writes_report_and_summary_and_exits_0(write_run, tmp_path, capsys):
    run = write_run(tmp_path / "run", status="running")
    code, out, _ = run_cli(["report", str(run), "-o", str(tmp_path / "out" / "x.html")], capsys)
    assert code == 0
    assert (tmp_path / "out" / "x.html").is_file() and (tmp_path / "out" / "summary.md").is_file()
    assert "x.html" in out


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "manifest.json").unlink(), "is not a run folder"),
    (lambda run: (run / "manifest.json").write_text('{"format": "expc-run/1",\n "status": }'),
     "manifest.json is not valid JSON"),
    (lambda run: (run / "manifest.json").write_text('{"format": "x/9", "status": "complete"}'),
     "unknown run folder format"),
    (lambda run: (run / "manifest.json").write_text('{"format": "expc-run/1", "status": "ok"}'),
     "unknown run status"),
    (lambda run: (run / "manifest.json").write_text(
        '{"format": "expc-run/1", "status": "complete", "model": null}'),
     "`model` in manifest.json must be an object"),
    (lambda run: (run / "results.safetensors").unlink(), "has no results.safetensors"),
    (lambda run: (run / "results.safetensors").write_bytes(b"\x00garbage"),
     "cannot read results.safetensors"),
])
def test_cli_bad_run_folder_is_a_diagnostic_and_exit_1(write_run, tmp_path, capsys, damage,
                                                      message):
    run = write_run(tmp_path / "run", n_layers=2, trunk=1, heads=2)
    damage(run)
    code, out, err = run_cli(["report", str(run)], capsys)
    assert code == 1
    assert message in err and "Traceback" not in err + out
    assert re.search(r"^\S+:\d+:\d+: error: ", err, flags=re.MULTILINE)
    assert not (run / "report.html").exists()


def test_cli_missing_run_folder_exit_1(tmp_path, capsys):
    code, _, err = run_cli(["report", str(tmp_path / "nope")], capsys)
    assert code == 1 and "does not exist" in err
