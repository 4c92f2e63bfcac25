"""The run folder store (runtime/store.py): manifest fields, results, refusal, resume, failure."""

from __future__ import annotations

import json

import pytest
import torch

from expc.runtime import atomic
from expc.runtime.checkpoint import Cursor, save_checkpoint
from expc.runtime.fingerprint import ir_digest
from expc.runtime.store import RunStore, open_run, spec_sha256
from expc.spec.diagnostics import DiagnosticError, error

SPEC_A = "experiment a { }\n"
SPEC_B = "experiment b { }\n"
MODEL = {"path": "builtin:tiny-llama", "architecture": "llama", "config": {"n_layers": 4},
         "n_layers": 4, "hydra": {"trunk": 2, "heads": 3}}
CAPTURE = {"kind": "capture", "meaning": "masked mean over attention tokens of resid_out at "
           "layer 3, head 1", "site": "resid_out", "name": "resid_out", "layer": 3, "head": 1,
           "aggregate": "mean", "mask": "attention"}
IMPORTANCE = {"kind": "importance", "meaning": "l2 norm of down_proj's input channels",
              "metric": "l2_norm", "module": "layers.0.mlp.down_proj", "layer": 0, "head": None,
              "field": "score"}


def ir_of(spec: str) -> dict:
    return {"name": spec.split()[1]}


def start(run_dir, spec=SPEC_A, **kwargs) -> RunStore:
    return RunStore.start(run_dir, spec_path="a.exp", spec_text=spec, ir=ir_of(spec),
                          model=MODEL, data_source="examples/data/prompts.jsonl", **kwargs)


def results() -> dict[str, torch.Tensor]:
    return {
        "capture/head1/resid_out_3": torch.arange(12.0).reshape(3, 4),
        "importance/l2_norm/layers.0.mlp.down_proj/score": torch.ones(5, dtype=torch.float64),
        "meta/sample_index": torch.arange(3),
        "meta/token_count": torch.tensor([4, 2, 7]),
    }


def descriptions() -> dict[str, dict]:
    return {"capture/head1/resid_out_3": CAPTURE,
            "importance/l2_norm/layers.0.mlp.down_proj/score": IMPORTANCE}


def complete_run(run_dir, spec=SPEC_A) -> RunStore:
    store = start(run_dir, spec)
    store.write_results(results(), descriptions())
    store.finish(samples=3, tokens=13, batches=2,
                 seconds={"load": 0.1, "compile": 0.2, "run": 2.0, "total": 2.5})
    return store


def manifest(run_dir) -> dict:
    return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))


def test_start_writes_a_running_manifest_with_the_documented_fields(tmp_path):
    run_dir = tmp_path / "runs" / "q"
    store = start(run_dir)
    m = manifest(run_dir)
    assert m["format"] == "expc-run/1" and m["status"] == "running" and m["error"] is None
    assert m["spec"] == {"path": "a.exp", "text": SPEC_A, "sha256": spec_sha256(SPEC_A),
                         "ir_sha256": ir_digest(ir_of(SPEC_A))}
    assert m["files"] == ["results.safetensors", "results.safetensors.index.json",
                          "results-*-of-*.safetensors", "results-rank*.partial.safetensors",
                          "report.html", "summary.md", ".rank*-error.json",
                          "checkpoint/rank*-cursor.json", "checkpoint/rank*-state-*.safetensors"]
    assert m["model"] == MODEL and m["ir"] == {"name": "a"}
    assert m["data"]["source"] == "examples/data/prompts.jsonl"
    assert set(m["versions"]) == {"expc", "torch", "python"}
    assert m["timings"]["started"] and m["timings"]["finished"] is None
    assert m["checkpoint"] is None and m["tensors"] == {}
    assert store.checkpoint_dir == run_dir / "checkpoint" and not store.resuming
    store.record_checkpoint(batches_done=4)
    assert manifest(run_dir)["checkpoint"] == {"dir": "checkpoint", "batches_done": 4}


def test_complete_run_reads_back_with_lazy_tensors(tmp_path):
    complete_run(tmp_path)
    m = manifest(tmp_path)
    assert m["status"] == "complete"
    assert m["data"] == {"source": "examples/data/prompts.jsonl", "samples": 3, "tokens": 13,
                         "batches": 2}
    assert m["timings"]["tokens_per_s"] == pytest.approx(6.5)
    assert m["timings"]["samples_per_s"] == pytest.approx(1.5)
    assert m["tensors"]["capture/head1/resid_out_3"] == {"shape": [3, 4], "dtype": "float32",
                                                        **CAPTURE}
    score = m["tensors"]["importance/l2_norm/layers.0.mlp.down_proj/score"]
    assert score["dtype"] == "float64" and score["module"] == "layers.0.mlp.down_proj"
    assert m["tensors"]["meta/token_count"]["kind"] == "meta"
    assert m["tensors"]["meta/sample_index"]["dtype"] == "int64"
    run = open_run(tmp_path)
    assert run.status == "complete" and run.manifest["spec"]["sha256"] == spec_sha256(SPEC_A)
    assert sorted(run.tensors) == sorted(results())
    for key, tensor in results().items():
        assert torch.equal(run.tensors[key], tensor)
    with pytest.raises(KeyError):
        run.tensors["capture/nope"]
    assert run.tensors is run.tensors  # one cache per run: each tensor is read once
    assert run.tensors["meta/token_count"] is run.tensors["meta/token_count"]


def test_open_run_names_an_unreadable_results_file(tmp_path):
    complete_run(tmp_path)
    (tmp_path / "results.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DiagnosticError, match="cannot read results.safetensors") as excinfo:
        open_run(tmp_path)
    assert excinfo.value.diagnostics[0].span.path == str(tmp_path / "results.safetensors")


def test_a_running_run_opens_with_no_tensors(tmp_path):
    start(tmp_path)
    run = open_run(tmp_path)
    assert run.status == "running" and len(run.tensors) == 0 and run.path == tmp_path


def test_finish_needs_results_first(tmp_path):
    store = start(tmp_path)
    with pytest.raises(RuntimeError):
        store.finish(samples=0, tokens=0, batches=0, seconds={})
    assert manifest(tmp_path)["status"] == "running"


def test_crash_while_finishing_never_says_complete(tmp_path, monkeypatch):
    store = start(tmp_path)
    store.write_results(results(), descriptions())
    def killed(*args):
        raise OSError("killed at the rename")

    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(DiagnosticError, match="cannot write `manifest.json`: killed"):
        store.finish(samples=3, tokens=13, batches=2, seconds={"run": 1.0})
    assert manifest(tmp_path)["status"] == "running"


@pytest.mark.parametrize("description, fragment", [
    ({**CAPTURE, "kind": "importance"}, "has kind"),
    ({k: v for k, v in CAPTURE.items() if k != "aggregate"}, "lacks aggregate"),
    (None, "no description"),
])
def test_results_need_a_full_description(tmp_path, description, fragment):
    store = start(tmp_path)
    tensors = {"capture/resid_out_1": torch.zeros(2)}
    with pytest.raises(ValueError, match=fragment):
        store.write_results(tensors, {} if description is None else
                            {"capture/resid_out_1": description})
    with pytest.raises(ValueError, match="must start with"):
        store.write_results({"other/x": torch.zeros(1)}, {"other/x": CAPTURE})
    assert not store.results_path.exists()


def test_another_spec_is_refused_without_force_and_the_folder_untouched(tmp_path):
    complete_run(tmp_path)
    before = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(DiagnosticError) as excinfo:
        start(tmp_path, SPEC_B)
    (diag,) = excinfo.value.diagnostics
    assert diag.span.path == str(tmp_path / "manifest.json")
    assert "another spec" in diag.message and "a.exp" in diag.message
    assert any("--force" in h for h in diag.help)
    assert (tmp_path / "manifest.json").read_bytes() == before
    assert (tmp_path / "results.safetensors").exists()


def test_force_replaces_another_specs_run_and_its_leftovers(tmp_path):
    complete_run(tmp_path)
    (tmp_path / "report.html").write_text("<html>")
    save_checkpoint(tmp_path / "checkpoint", states={}, cursor=Cursor(
        batches_done=1, samples_done=1, elapsed_seconds=1.0))
    (tmp_path / "notes.txt").write_text("the user's own file")
    store = start(tmp_path, SPEC_B, force=True)
    assert manifest(tmp_path)["spec"]["sha256"] == spec_sha256(SPEC_B)
    assert manifest(tmp_path)["status"] == "running" and not store.resuming
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "notes.txt"]


def test_same_spec_restarts_fresh_unless_resuming(tmp_path):
    start(tmp_path).record_checkpoint(batches_done=1)
    save_checkpoint(tmp_path / "checkpoint", states={}, cursor=Cursor(
        batches_done=1, samples_done=1, elapsed_seconds=1.0))
    store = start(tmp_path, resume=True)
    assert store.resuming and (tmp_path / "checkpoint" / "rank0-cursor.json").exists()
    assert manifest(tmp_path)["checkpoint"] == {"dir": "checkpoint", "batches_done": 1}
    store = start(tmp_path)
    assert not store.resuming and not (tmp_path / "checkpoint").exists()
    assert manifest(tmp_path)["checkpoint"] is None


def test_resume_with_another_spec_is_refused_even_with_force(tmp_path):
    start(tmp_path)
    with pytest.raises(DiagnosticError, match="cannot resume"):
        start(tmp_path, SPEC_B, resume=True, force=True)
    assert manifest(tmp_path)["spec"]["sha256"] == spec_sha256(SPEC_A)


def test_resume_into_an_empty_folder_starts_fresh(tmp_path):
    assert not start(tmp_path / "new", resume=True).resuming


@pytest.mark.parametrize("force", [False, True])
def test_unreadable_manifest_is_refused_even_when_forced(tmp_path, force):
    # Not an expc manifest, so not expc's file to overwrite (issue 12, item 1): it stays.
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DiagnosticError, match="not a readable expc run manifest") as excinfo:
        start(tmp_path, force=force)
    assert excinfo.value.diagnostics[0].span.path == str(tmp_path / "manifest.json")
    assert (tmp_path / "manifest.json").read_text() == "{not json"


def test_output_dir_that_is_a_file_is_a_diagnostic(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    with pytest.raises(DiagnosticError, match="is a file"):
        start(target)


def test_failure_keeps_the_diagnostics(tmp_path):
    store = start(tmp_path)
    bad = error("data.jsonl", "malformed JSON: Expecting value", code="data-json", line=7,
                col=3)
    store.fail(DiagnosticError(bad))
    m = manifest(tmp_path)
    assert m["status"] == "failed" and m["timings"]["finished"]
    assert m["error"]["message"] == "malformed JSON: Expecting value"
    assert m["error"]["diagnostics"] == [bad.to_json()]
    assert open_run(tmp_path).status == "failed"
    store = start(tmp_path)
    store.fail(RuntimeError("out of memory"))
    assert manifest(tmp_path)["error"] == {"message": "RuntimeError: out of memory",
                                           "diagnostics": []}


def test_intervention_and_effect_keys_need_their_fields(tmp_path):
    store = start(tmp_path)
    effect = {"kind": "effect", "meaning": "kl", "metric": "kl", "name": "kl", "head": 1}
    with pytest.raises(ValueError, match="lacks reference"):
        store.write_results({"effect/kl/head1": torch.zeros(2)}, {"effect/kl/head1": effect})
    units = {"kind": "intervention", "meaning": "zero", "target": "mlp_out", "layer": 1,
             "head": 1, "field": "channels"}
    store.write_results({"effect/kl/head1": torch.zeros(2),
                         "intervention/head1/mlp_out_1/channels": torch.arange(3)},
                        {"effect/kl/head1": {**effect, "reference": 0},
                         "intervention/head1/mlp_out_1/channels": units})
    assert store.manifest["tensors"]["intervention/head1/mlp_out_1/channels"]["shape"] == [3]
