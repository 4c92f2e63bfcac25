"""Sources from earlier run folders: key choice, one load per tensor, and every problem a
diagnostic at the intervention's span naming the run folder and the key."""

import pytest
import torch
from intervene_runs import SPAN, write_run

from expc.runtime.intervene.sources import RunSources
from expc.spec.diagnostics import DiagnosticError


def _message(excinfo) -> str:
    (diagnostic,) = excinfo.value.diagnostics
    assert diagnostic.span == SPAN
    return diagnostic.message


def _mean(sources, run, *, head=1, width=4):
    return sources.capture(run, site="resid_out", layer=1, head=head, mode="dataset_mean",
                           width=width, span=SPAN)


def test_missing_run_folder_is_a_diagnostic_naming_it(tmp_path):
    with pytest.raises(DiagnosticError) as excinfo:
        _mean(RunSources(), str(tmp_path / "nowhere"))
    assert "nowhere" in _message(excinfo) and "does not exist" in _message(excinfo)


def test_folder_without_manifest_is_a_diagnostic(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiagnosticError) as excinfo:
        _mean(RunSources(), str(tmp_path / "empty"))
    assert "empty" in _message(excinfo) and "manifest.json" in _message(excinfo)


@pytest.mark.parametrize("status", ["running", "failed"])
def test_unfinished_run_is_a_diagnostic(tmp_path, status):
    run = write_run(tmp_path / "r", {"capture/resid_out_1": torch.zeros(4)}, status=status)
    with pytest.raises(DiagnosticError) as excinfo:
        _mean(RunSources(), run)
    assert run in _message(excinfo) and f"status `{status}`" in _message(excinfo)


def test_missing_key_names_the_run_and_every_key_tried(tmp_path):
    run = write_run(tmp_path / "r", {"capture/resid_out_2": torch.zeros(4)})
    with pytest.raises(DiagnosticError) as excinfo:
        _mean(RunSources(), run)
    message = _message(excinfo)
    assert run in message
    for key in ("capture/head1/resid_out_1", "capture/resid_out_1", "capture/head0/resid_out_1"):
        assert f"`{key}`" in message


def test_wrong_width_is_a_diagnostic_naming_the_key(tmp_path):
    run = write_run(tmp_path / "r", {"capture/resid_out_1": torch.zeros(5)})
    with pytest.raises(DiagnosticError) as excinfo:
        _mean(RunSources(), run)
    message = _message(excinfo)
    assert "`capture/resid_out_1`" in message and run in message and "[5]" in message
    assert "[4]" in message


def test_wrong_aggregate_is_a_diagnostic(tmp_path):
    run = write_run(tmp_path / "r", {"capture/resid_out_1": torch.zeros(4)},
                    aggregates={"capture/resid_out_1": "mean"})
    with pytest.raises(DiagnosticError) as excinfo:
        _mean(RunSources(), run)
    assert "aggregate = mean" in _message(excinfo) and "dataset_mean" in _message(excinfo)


@pytest.mark.parametrize(("held", "head", "chosen"), [
    (("capture/head1/resid_out_1", "capture/resid_out_1", "capture/head0/resid_out_1"), 1,
     "capture/head1/resid_out_1"),
    (("capture/resid_out_1", "capture/head0/resid_out_1"), 1, "capture/resid_out_1"),
    (("capture/head0/resid_out_1", "capture/head2/resid_out_1"), 1,
     "capture/head0/resid_out_1"),
    (("capture/head0/resid_out_1", "capture/resid_out_1"), None, "capture/resid_out_1"),
])
def test_key_choice_same_head_else_unsplit_else_head0(tmp_path, held, head, chosen):
    run = write_run(tmp_path / "r", {key: torch.full((4,), float(i))
                                     for i, key in enumerate(held)})
    key, value = _mean(RunSources(), run, head=head)
    assert key == chosen
    assert torch.equal(value, torch.full((4,), float(held.index(chosen))))


def test_each_folder_and_tensor_is_read_once(tmp_path, monkeypatch):
    import expc.runtime.intervene.sources as sources_module

    run = write_run(tmp_path / "r", {"capture/resid_out_1": torch.arange(4.0)})
    reads = []
    real = sources_module.read_run_manifest
    monkeypatch.setattr(sources_module, "read_run_manifest",
                        lambda folder: reads.append(folder) or real(folder))
    sources = RunSources()
    first = _mean(sources, run)[1]
    second = _mean(sources, run)[1]
    assert first is second and len(reads) == 1


def test_scores_check_their_length(tmp_path):
    run = write_run(tmp_path / "r", {
        "importance/channel_contribution/layers.1.mlp.down_proj/score": torch.zeros(7)})
    sources = RunSources()
    key, scores = sources.scores(run, metric="channel_contribution",
                                 module_path="heads.1.layers.1.mlp.down_proj", head=1, count=7,
                                 span=SPAN)
    assert key == "importance/channel_contribution/layers.1.mlp.down_proj/score"
    with pytest.raises(DiagnosticError) as excinfo:
        sources.scores(run, metric="channel_contribution",
                       module_path="heads.1.layers.1.mlp.down_proj", head=1, count=8, span=SPAN)
    assert "[7]" in _message(excinfo) and "[8]" in _message(excinfo)


def test_vectors_are_one_row_or_one_per_sample(tmp_path):
    run = write_run(tmp_path / "r", {"v": torch.zeros(4), "rows": torch.zeros(3, 4),
                                     "bad": torch.zeros(2, 4)})
    sources = RunSources()
    assert sources.vector(run, "v", width=4, n_samples=3, span=SPAN).shape == (4,)
    assert sources.vector(run, "rows", width=4, n_samples=3, span=SPAN).shape == (3, 4)
    with pytest.raises(DiagnosticError) as excinfo:
        sources.vector(run, "bad", width=4, n_samples=3, span=SPAN)
    assert "`bad`" in _message(excinfo) and "[3, 4]" in _message(excinfo)
