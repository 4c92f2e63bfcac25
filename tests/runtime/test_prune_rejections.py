"""Bad input to `expc prune` ends as one diagnostic naming what is wrong, and nothing is
written: no output folder and no temporary folder beside it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import expc.runtime.prune.writer as writer
from expc.runtime.prune.export import PruneRequest, prune
from expc.spec.diagnostics import DiagnosticError
from prune_support import build, layer_run, scoring_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    hf = build("llama", folder / "ckpt")
    return folder, scoring_run(folder, folder / "ckpt", hf.config.vocab_size)


def _refused(request: PruneRequest, match: str) -> DiagnosticError:
    with pytest.raises(DiagnosticError, match=match) as caught:
        prune(request)
    siblings = [p.name for p in request.out.parent.iterdir()
                if p.name.startswith(f".{request.out.name}.")]
    assert not request.out.exists() and siblings == []
    return caught.value


def test_unfinished_run(tmp_path, scored):
    folder, _ = scored
    run = layer_run(tmp_path / "run", folder / "ckpt", [0.1, 0.2, 0.3], status="running")
    _refused(PruneRequest(run=run, metric="block_influence", out=tmp_path / "o", keep=2),
             "not a finished run")


def test_missing_run_folder(tmp_path):
    _refused(PruneRequest(run=tmp_path / "nope", metric="l2_norm", out=tmp_path / "o",
                          keep=2), "does not exist")


@pytest.mark.parametrize("metric,module", [("layernorm_contribution", None),
                                           ("channel_contribution", "self_attn.o_proj"),
                                           ("kv_head_contribution", "mlp.down_proj")])
def test_metric_that_selects_no_prunable_unit(tmp_path, scored, metric, module):
    error = _refused(PruneRequest(run=scored[1], metric=metric, module=module,
                                  out=tmp_path / "o", fraction=0.5), "cannot remove units")
    assert "kv_head_contribution at self_attn.o_proj" in error.diagnostics[0].help[0]


def test_metric_the_run_did_not_compute(tmp_path, scored):
    _refused(PruneRequest(run=scored[1], metric="block_influence", out=tmp_path / "o",
                          keep=2), "holds no `block_influence` score of layer 0")


@pytest.mark.parametrize("fraction,keep,match", [
    (1.0, None, "removes every unit"), (0.01, None, r"rounds to 0\) removes nothing"),
    (None, 0, "removes every unit"), (None, 48, "removes nothing")])
def test_counts_that_remove_all_or_nothing(tmp_path, scored, fraction, keep, match):
    _refused(PruneRequest(run=scored[1], metric="channel_contribution", out=tmp_path / "o",
                          fraction=fraction, keep=keep), match)


def test_existing_output_folder_is_left_alone(tmp_path, scored):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(DiagnosticError, match="already exists"):
        prune(PruneRequest(run=scored[1], metric="l2_norm", out=out, fraction=0.5))
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_scores_of_another_model(tmp_path, scored):
    folder, _ = scored
    layer_run(tmp_path / "short", folder / "ckpt", [0.1, 0.2])  # 2 of the 3 layers
    _refused(PruneRequest(run=tmp_path / "short", metric="block_influence",
                          out=tmp_path / "o", keep=1), "score of layer 2")
    run = layer_run(tmp_path / "wide", folder / "ckpt", [0.1, 0.2, 0.3])
    tensors = {f"importance/l2_norm/layers.{layer}.mlp.down_proj/score": torch.ones(10)
               for layer in range(3)}
    save_file(tensors, str(run / "results.safetensors"))
    _refused(PruneRequest(run=run, metric="l2_norm", out=tmp_path / "o", keep=1),
             "has 10 entries; the model has 48 units there")


def test_a_failure_while_writing_leaves_nothing(tmp_path, scored, monkeypatch):
    def full_disk(path, entries, metadata, **_):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_streamed", full_disk)
    _refused(PruneRequest(run=scored[1], metric="l2_norm", out=tmp_path / "o", fraction=0.5),
             "No space left on device")


def test_provenance_names_the_source_and_units(tmp_path, scored):
    folder, run = scored
    out = tmp_path / "o"
    prune(PruneRequest(run=run, metric="l2_norm", out=out, fraction=0.5))
    info = json.loads((out / "expc_prune.json").read_text())
    assert info["source_run"] == str(run.resolve()) and info["metric"] == "l2_norm"
    assert info["unit"] == "neurons" and info["total"] == 48 and info["kept"] == 24
    assert sorted(info["removed"]) == ["0", "1", "2"]
    assert all(len(units) == 24 for units in info["removed"].values())
    assert info["config_changes"] == {"intermediate_size": [48, 24]}
    assert info["exact"] is True and info["expc_version"]
