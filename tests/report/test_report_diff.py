"""`expc diff`: identical runs, one perturbed layer (named), drift in several layers (the
first in forward order is named), mismatched keys, shapes and dtypes, tolerances, JSON."""

from __future__ import annotations

import json

import pytest
import torch

from expc.cli import main
from expc.report.diff import compare_values, diff_runs
from expc.report.diff_text import render_text


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


@pytest.fixture
def base(write_run, tmp_path):
    return write_run(tmp_path / "a")


def test_identical_runs_are_the_same_exit_0(write_run, base, tmp_path, capsys):
    other = write_run(tmp_path / "b")
    result = diff_runs(str(base), str(other))
    assert result.same and result.first_divergence is None
    assert all(k.max_abs == 0.0 for k in result.keys if k.max_abs is not None)
    code, out, _ = run_cli(["diff", str(base), str(other)], capsys)
    assert code == 0
    assert out.strip().endswith("runs are the same") and "note:" not in out
    assert f"{len(result.keys)} of {len(result.keys)} keys the same" in out


def test_one_perturbed_layer_is_named(write_run, base, tmp_path, capsys):
    def perturb(tensors):
        tensors["capture/head1/resid_out_3"][2, 5] += 1e-3

    other = write_run(tmp_path / "b", edit=perturb)
    result = diff_runs(str(base), str(other))
    assert not result.same
    first = result.first_divergence
    assert (first.key, first.place, first.status) == (
        "capture/head1/resid_out_3", "head1 layer 3", "differs")
    assert first.max_abs == pytest.approx(1e-3, rel=1e-3)
    assert [k.key for k in result.keys if not k.same] == ["capture/head1/resid_out_3"]
    code, out, _ = run_cli(["diff", str(base), str(other)], capsys)
    assert code == 1
    assert "first divergence: head1 layer 3 (capture/head1/resid_out_3)" in out


def test_first_divergence_follows_forward_order(write_run, base, tmp_path):
    def drift(tensors):  # drift in a head, in the trunk, and at the final norm
        for key in ("capture/head0/resid_out_2", "capture/resid_out_1",
                    "capture/head0/final_norm", "importance/l2_norm/layers.1.mlp.down_proj/score"):
            tensors[key] = tensors[key] * 1.01

    result = diff_runs(str(base), str(write_run(tmp_path / "b", edit=drift)))
    differing = [(k.place, k.key) for k in result.keys if not k.same]
    assert differing == [
        ("layer 1", "capture/resid_out_1"),
        ("layer 1", "importance/l2_norm/layers.1.mlp.down_proj/score"),
        ("head0 layer 2", "capture/head0/resid_out_2"),
        ("head0 final_norm", "capture/head0/final_norm"),
    ]
    assert result.first_divergence.place == "layer 1"


def test_large_keys_compared_a_slice_at_a_time(write_run, base, tmp_path, monkeypatch):
    from expc.report import run_folder

    def perturb(tensors):
        tensors["capture/attn_out_1"][4, 3, 7] += 0.5  # in the fifth sample's slice
        tensors["capture/mlp_out_0.count"] = torch.tensor(7.0)  # a scalar key

    other = write_run(tmp_path / "b", edit=perturb)
    write_run(base, edit=lambda t: t.update({"capture/mlp_out_0.count": torch.tensor(7.0)}))
    monkeypatch.setattr(run_folder, "CHUNK_ELEMENTS", 1)  # one sample per slice
    result = diff_runs(str(base), str(other))
    differing = {k.key: k for k in result.keys if not k.same}
    assert list(differing) == ["capture/attn_out_1"]
    assert differing["capture/attn_out_1"].max_abs == pytest.approx(0.5)


def test_tolerances_decide(write_run, base, tmp_path):
    def nudge(tensors):
        tensors["capture/resid_out_0"] = tensors["capture/resid_out_0"] + 1e-4

    other = write_run(tmp_path / "b", edit=nudge)
    assert not diff_runs(str(base), str(other)).same
    assert diff_runs(str(base), str(other), atol=2e-4).same
    assert not diff_runs(str(base), str(other), atol=0.0, rtol=1e-6).same


def test_mismatched_keys_shapes_and_dtypes(write_run, base, tmp_path, capsys):
    def mismatch(tensors):
        del tensors["capture/head2/resid_out_3"]
        tensors["capture/extra_9"] = torch.zeros(3)
        tensors["capture/resid_out_1"] = tensors["capture/resid_out_1"][:, :16]
        tensors["capture/resid_out_0"] = tensors["capture/resid_out_0"].to(torch.bfloat16)

    other = write_run(tmp_path / "b", edit=mismatch)
    result = diff_runs(str(base), str(other))
    status = {k.key: k.status for k in result.keys if not k.same}
    assert status == {"capture/head2/resid_out_3": "missing_in_b",
                      "capture/extra_9": "missing_in_a",
                      "capture/resid_out_1": "shape",
                      "capture/resid_out_0": "differs"}
    by_key = {k.key: k for k in result.keys}
    assert (by_key["capture/resid_out_1"].shape_a, by_key["capture/resid_out_1"].shape_b) == (
        (6, 32), (6, 16))
    assert by_key["capture/resid_out_0"].dtype_b == "BF16"
    assert result.first_divergence.key == "capture/resid_out_0"
    text = render_text(result)
    assert "missing_in_b" in text and "missing_in_a" in text and "6x32" in text
    code, out, _ = run_cli(["diff", str(base), str(other), "--format", "json"], capsys)
    assert code == 1
    report = json.loads(out)
    assert report["same"] is False
    assert report["first_divergence"] == {"place": "layer 0", "key": "capture/resid_out_0"}
    assert {k["key"]: k["status"] for k in report["keys"] if k["status"] != "same"} == status


def test_manifest_context_is_named_but_does_not_decide(write_run, base, tmp_path, capsys):
    other = write_run(tmp_path / "b", model_path="/ckpt/other")
    result = diff_runs(str(base), str(other))
    assert result.same
    assert ("model.path", "builtin:tiny-llama", "/ckpt/other") in result.context
    assert {field for field, _, _ in result.context} == {"model.path", "spec.sha256"}
    code, out, _ = run_cli(["diff", str(base), str(other)], capsys)
    assert code == 0
    assert "note: model.path differs: 'builtin:tiny-llama' (a) vs '/ckpt/other' (b)" in out


def test_compare_values_against_the_formula():
    a = torch.tensor([1.0, 2.0, 0.0, float("nan"), float("inf"), 5.0])
    b = torch.tensor([1.0, 2.5, 0.0, float("nan"), float("inf"), 0.0])
    within, max_abs, max_rel = compare_values(a[:5], b[:5], atol=0.0, rtol=0.1)
    # |a-b| = [0, .5, 0, (nan=nan) 0, (inf=inf) 0]; rel = .5/2.5 = .2 > rtol
    assert (within, max_abs, max_rel) == (False, 0.5, pytest.approx(0.2))
    assert compare_values(a[:5], b[:5], atol=0.5, rtol=0.0)[0]
    assert compare_values(a, b, atol=10.0, rtol=0.0)[2] == float("inf")  # 5 vs 0
    assert not compare_values(torch.tensor([float("nan")]), torch.tensor([1.0]),
                              atol=1e9, rtol=1e9)[0]


def test_unreadable_run_is_a_diagnostic(base, tmp_path, capsys):
    code, out, err = run_cli(["diff", str(base), str(tmp_path / "missing")], capsys)
    assert code == 1 and "does not exist" in err and "Traceback" not in out + err
