"""Sharded, streaming results (docs/run-folder.md): the same tensors as one results file,
resumable to byte-identical shards, joined across torchrun ranks, and expc's own files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import expc
from expc.report.run_folder import open_run_folder
from tests.runtime.test_run_e2e import REPO, _cursor_batches, expc_cli, write_spec

TINY = "20KB"  # a few batches of the spec's rows per shard


def spec_text(out: Path, *, shard_size: str, batch_size: int = 2, every: int = 2) -> str:
    return f"""
experiment sharded {{
    model = "builtin:tiny-llama"
    data {{
        source = jsonl("{REPO / 'examples/data/prompts.jsonl'}", field = "text")
        batch_size = {batch_size}
        max_length = 32
    }}
    capture resid_out[*] {{ aggregate = full }}
    capture attn_pattern[1] {{ aggregate = full }}
    capture resid_out[0] as m {{ aggregate = mean }}
    capture resid_mid[1] {{ aggregate = dataset_mean }}
    importance l2_norm at mlp.down_proj[0]
    effect loss
    output {{ dir = "{out}"  shard_size = "{shard_size}"  checkpoint_every = {every} }}
}}
"""


def run(tmp_path: Path, name: str, *, shard_size: str, nproc: int = 1, **kw) -> Path:
    out = tmp_path / name
    spec = write_spec(tmp_path, spec_text(out, shard_size=shard_size, **kw), name=f"{name}.exp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = expc_cli("run", str(spec), "--quiet", "--nproc", str(nproc), env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    return out


def assert_same_tensors(a: Path, b: Path) -> None:
    ra, rb = expc.open_run(a), expc.open_run(b)
    assert ra.status == rb.status == "complete"
    assert set(ra.tensors) == set(rb.tensors)
    for key in rb.tensors:
        x, y = ra.tensors[key], rb.tensors[key]
        assert (x.dtype, x.shape) == (y.dtype, y.shape) and torch.equal(x, y), key
    ma, mb = (json.loads((p / "manifest.json").read_text())["tensors"] for p in (a, b))
    assert ma == mb
    fa, fb = open_run_folder(a), open_run_folder(b)
    assert fa.layout == fb.layout
    for key in fb.layout:  # slices across pieces, in data order, as the report reads them
        for x, y in zip(fa.chunks(key, 3), fb.chunks(key, 3), strict=True):
            assert torch.equal(x, y), key


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The reference: the same spec whose results fit one file."""
    return run(tmp_path_factory.mktemp("whole"), "whole", shard_size="2GB")


def test_small_results_stay_one_file(whole):
    assert (whole / "results.safetensors").is_file()
    assert not list(whole.glob("results-*")) and not (whole / "results.safetensors.index.json"
                                                      ).exists()


def test_shards_hold_the_same_tensors_as_one_file(tmp_path, whole):
    sharded = run(tmp_path, "sharded", shard_size=TINY)
    shards = sorted(p.name for p in sharded.glob("results-*"))
    assert len(shards) > 3 and shards[-1] == f"results-{len(shards):05d}-of-{len(shards):05d}" \
        ".safetensors"
    assert not (sharded / "results.safetensors").exists()
    index = json.loads((sharded / "results.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    keys = index["metadata"]["keys"]
    assert keys["capture/resid_out_0"]["order"] == "run"
    assert len(keys["capture/resid_out_0"]["pieces"]) > 1
    assert keys["capture/resid_mid_1"]["order"] == "whole"  # not per sample: in the last shard
    assert_same_tensors(sharded, whole)
    report = expc_cli("report", str(sharded))
    assert report.returncode == 0, report.stderr
    diff = expc_cli("diff", str(sharded), str(whole))
    assert diff.returncode == 0 and "runs are the same" in diff.stdout, diff.stdout + diff.stderr


def test_interventions_read_a_sharded_source_run_as_they_read_one_file(tmp_path, whole):
    """`patch(run)` (a per-sample `full` capture, stored in run order across shards, and the
    token counts), `mean(run)` and `lowest(run, ...)` take the same values from a sharded
    source run as from the one-file run of the same spec."""
    sharded = run(tmp_path, "source", shard_size=TINY)
    outs = []
    for name, source in (("from_whole", whole), ("from_sharded", sharded)):
        spec = write_spec(tmp_path, f"""
experiment {name} {{
    model = "builtin:tiny-llama"
    hydra {{ trunk = auto  heads = 4 }}
    data {{
        source = jsonl("{REPO / 'examples/data/prompts.jsonl'}", field = "text")
        batch_size = 2
        max_length = 32
    }}
    intervene resid_out[0] of heads[1] {{ set = patch(run = "{source}") }}
    intervene resid_mid[1] of heads[2] {{ set = mean(run = "{source}") }}
    intervene mlp.down_proj[0] of heads[3] {{ set = zero, channels = lowest(run = "{source}", metric = l2_norm, fraction = 0.25) }}
    effect kl of heads[1:] vs heads[0]
    output {{ dir = "{tmp_path / name}" }}
}}
""", name=f"{name}.exp")
        expc.run(spec, quiet=True)
        outs.append(expc.open_run(tmp_path / name))
    a, b = outs  # the manifests differ only in the source folders their meanings name
    assert set(a.tensors) == set(b.tensors) and any(k.startswith("effect/") for k in a.tensors)
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key


def test_a_rerun_removes_the_shards_it_no_longer_writes(tmp_path):
    out = run(tmp_path, "again", shard_size=TINY)
    spec = write_spec(tmp_path, spec_text(out, shard_size="2GB"), name="again.exp")
    (out / "notes.txt").write_text("mine")
    done = expc_cli("run", str(spec), "--quiet", "--force")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "manifest.json", "notes.txt", "results.safetensors"]


@pytest.mark.slow
def test_resume_after_sigkill_rewrites_byte_identical_shards(tmp_path):
    whole = run(tmp_path, "uninterrupted", shard_size=TINY, batch_size=1, every=1)
    killed = tmp_path / "killed"
    spec = write_spec(tmp_path, spec_text(killed, shard_size=TINY, batch_size=1, every=1))
    proc = subprocess.Popen([sys.executable, "-m", "expc", "run", str(spec), "--quiet"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while proc.poll() is None and _cursor_batches(killed) < 17:
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert list(killed.glob("results-rank0-*.partial.safetensors")), "no shard before the kill"
    assert not (killed / "results.safetensors.index.json").exists()
    cursor = json.loads((killed / "checkpoint" / "rank0-cursor.json").read_text())
    for shard in cursor["shards"]:  # every shard a checkpoint names is whole on disk
        with open(killed / shard["file"], "rb"):
            pass
    resumed = expc_cli("run", str(spec), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    names = sorted(p.name for p in whole.glob("results-*"))
    assert names == sorted(p.name for p in killed.glob("results-*"))
    for name in names:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    assert_same_tensors(killed, whole)


@pytest.mark.slow
def test_two_processes_join_their_shards_in_rank_order(tmp_path, whole):
    two = run(tmp_path, "two", shard_size=TINY, nproc=2)
    assert not list(two.glob("*.partial.safetensors"))
    assert_same_tensors(two, whole)
