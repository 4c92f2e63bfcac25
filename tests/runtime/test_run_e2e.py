"""`expc run` end to end: results against transformers, batching, resume, torchrun, bad input."""

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

REPO = Path(__file__).resolve().parents[2]


def expc_cli(*args: str, cwd: Path = REPO, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "expc", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, **kwargs)


def write_spec(folder: Path, body: str, *, name: str = "spec.exp") -> Path:
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory):
    """A tiny random Llama checkpoint saved by transformers, plus pre-tokenised data."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("llama")
    config = transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder / "ckpt")
    gen = torch.Generator().manual_seed(1)
    samples = [torch.randint(1, 97, (int(n),), generator=gen).tolist()
               for n in torch.randint(3, 20, (11,), generator=gen)]
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"input_ids": s}) + "\n" for s in samples))
    return folder, model, samples


def parity_spec(folder: Path, *, batch_size: int, extra: str = "") -> Path:
    return write_spec(folder, f"""
experiment parity {{
    model = "{folder / 'ckpt'}"
    data {{
        source     = tokens("{folder / 'data.jsonl'}")
        batch_size = {batch_size}
    }}
    capture resid_out[*] {{ aggregate = mean(mask = attention) }}
    capture resid_out[-1] as last_tok {{ aggregate = mean(mask = last) }}
    {extra}
    output {{ dir = "{folder / f'run{batch_size}'}" }}
}}
""", name=f"parity{batch_size}.exp")


def hf_layer_outputs(model, ids: list[int]) -> list[torch.Tensor]:
    """Every decoder layer's raw output `[S, H]` for one unpadded sample, via HF hooks."""
    outputs: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(
        lambda mod, args, out: outputs.append((out[0] if isinstance(out, tuple) else out)[0]))
        for layer in model.model.layers]
    with torch.no_grad():
        model(torch.tensor([ids]))
    for hook in hooks:
        hook.remove()
    return outputs


def test_captured_means_match_transformers(hf_llama):
    folder, model, samples = hf_llama
    results = expc.run(parity_spec(folder, batch_size=4))
    for index, ids in enumerate(samples):
        layers = hf_layer_outputs(model, ids)
        for layer, hidden in enumerate(layers):
            expected = hidden.mean(dim=0)  # no padding when run alone
            got = results[f"capture/resid_out_{layer}"][index]
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(results["capture/last_tok_2"][index], layers[-1][-1],
                                   atol=1e-5, rtol=1e-4)
    assert results["meta/token_count"].tolist() == [len(s) for s in samples]


def test_batched_and_padded_equals_batch_size_one(hf_llama):
    folder, _, _ = hf_llama
    batched = expc.run(parity_spec(folder, batch_size=5))
    single = expc.run(parity_spec(folder, batch_size=1))
    assert set(batched) == set(single)
    for key in batched:
        torch.testing.assert_close(batched[key], single[key], atol=1e-5, rtol=1e-4)


def test_quickstart_run_folder_holds_the_contract_keys(tmp_path):
    out = tmp_path / "qs"
    proc = expc_cli("run", "examples/quickstart.exp", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    run = expc.open_run(out)
    manifest = run.manifest
    assert manifest["status"] == "complete"
    assert manifest["model"]["hydra"] == {"trunk": 2, "heads": 3}
    assert manifest["data"]["samples"] == 32
    keys = set(run.tensors)
    assert {"capture/resid_out_0", "capture/head2/resid_out_3", "capture/attn_out_1",
            "capture/attn_out_1.mask", "capture/head1/resid_last_3",
            "importance/kv_head_contribution/head0/layers.2.self_attn.o_proj/score",
            "importance/iterative_channel/head1/layers.3.mlp.down_proj/score",
            "meta/sample_index", "meta/token_count"} <= keys
    for key, entry in manifest["tensors"].items():
        assert entry["shape"] == list(run.tensors[key].shape), key
    assert not torch.isnan(run.tensors["capture/resid_out_1"]).any()


def test_a_signal_before_the_batch_loop_leaves_the_run_failed_not_running(tmp_path):
    out = tmp_path / "early"
    proc = subprocess.Popen([sys.executable, "-m", "expc", "run", "examples/quickstart.exp",
                             "--out", str(out), "--quiet"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not (out / "manifest.json").exists():
        assert time.monotonic() < deadline, "the run never claimed its folder"
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "SIGTERM" in manifest["error"]["message"]


def _cursor_batches(run_dir: Path) -> int:
    cursor = run_dir / "checkpoint" / "rank0-cursor.json"
    try:
        return json.loads(cursor.read_text())["batches_done"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("kill_after,sig", [(2, signal.SIGKILL), (7, signal.SIGKILL),
                                            (15, signal.SIGKILL), (4, signal.SIGINT),
                                            (3, signal.SIGTERM)])
def test_resume_after_kill_or_ctrl_c_equals_uninterrupted(tmp_path, kill_after, sig):
    spec = write_spec(tmp_path, f"""
experiment resumable {{
    model = "builtin:tiny-llama"
    hydra {{ trunk = 2  heads = 2 }}
    data {{
        source = jsonl("{REPO / 'examples/data/prompts.jsonl'}", field = "text")
        batch_size = 1
        max_length = 32
    }}
    capture resid_out[*] {{ aggregate = mean(mask = attention) }}
    capture resid_mid[2] {{ aggregate = dataset_mean }}
    importance channel_contribution at mlp.down_proj[*]
    importance iterative_channel at mlp.down_proj[3] {{ iterations = 3 }}
    output {{ dir = "{tmp_path / 'killed'}"  checkpoint_every = 1 }}
}}
""")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "expc", "run", str(spec), "--quiet"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and _cursor_batches(killed) < kill_after:
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.005)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    status = json.loads((killed / "manifest.json").read_text())["status"]
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        assert status == "running"
    else:  # Ctrl-C, SIGTERM: the batch in flight finishes, a checkpoint is saved, the user is told
        assert proc.returncode == 1, stderr
        assert "--resume" in stderr and "Traceback" not in stderr
        assert status == "failed"

    resumed = expc_cli("run", str(spec), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    reference = expc_cli("run", str(spec), "--out", str(tmp_path / "whole"), "--quiet")
    assert reference.returncode == 0, reference.stderr
    a, b = expc.open_run(killed), expc.open_run(tmp_path / "whole")
    assert a.status == b.status == "complete"
    assert set(a.tensors) == set(b.tensors)
    for key in a.tensors:
        torch.testing.assert_close(a.tensors[key], b.tensors[key], atol=1e-6, rtol=1e-5)


def test_two_process_torchrun_equals_one_process(hf_llama, tmp_path):
    folder, _, _ = hf_llama
    extra = ("capture resid_mid[1] { aggregate = dataset_mean }\n"
             "    importance l2_norm at mlp.down_proj[*]\n"
             "    importance kv_head_contribution at self_attn.o_proj[*]")
    spec = parity_spec(folder, batch_size=2, extra=extra)
    one = expc_cli("run", str(spec), "--out", str(tmp_path / "one"), "--quiet")
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = expc_cli("run", str(spec), "--out", str(tmp_path / "two"), "--quiet", "--nproc", "2",
                   env=env)
    assert two.returncode == 0, two.stderr + two.stdout
    a, b = expc.open_run(tmp_path / "one"), expc.open_run(tmp_path / "two")
    assert b.status == "complete"
    assert set(a.tensors) == set(b.tensors)
    for key in a.tensors:
        torch.testing.assert_close(a.tensors[key], b.tensors[key], atol=1e-5, rtol=1e-4)


BAD_DATA = {
    "malformed-json": ('{"text": "fine"}\n{"text": broken\n', 2),
    "missing-field": ('{"text": "fine"}\n{"other": "x"}\n', 2),
    "empty-file": ("", 1),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_names_file_and_line_and_marks_run_failed(tmp_path, case):
    content, line = BAD_DATA[case]
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    spec = write_spec(tmp_path, f"""
experiment bad {{
    model = "builtin:tiny-llama"
    data {{ source = jsonl("{data}", field = "text")  batch_size = 2 }}
    capture resid_out[0] {{ aggregate = mean }}
    output {{ dir = "{tmp_path / 'run'}" }}
}}
""")
    proc = expc_cli("run", str(spec), "--quiet")
    assert proc.returncode == 1
    assert f"{data}:{line}:" in proc.stderr
    assert "Traceback" not in proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"]["diagnostics"][0]["line"] == line
    assert not (tmp_path / "run" / "results.safetensors").exists()


@pytest.mark.parametrize("nproc, batch_size", [(1, 2), (2, 1)])
def test_empty_field_mask_row_names_the_sample(tmp_path, nproc, batch_size):
    """With two ranks only rank 1 sees the empty row (batch 1, the shorter sample): its
    diagnostic is what the user reads and the manifest keeps, not rank 0's broken gloo
    connection or torchrun's failure table."""
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"input_ids": [5, 6, 7], "keep": [1, 0, 1]}) + "\n"
                    + json.dumps({"input_ids": [8, 9], "keep": [0, 0]}) + "\n")
    spec = write_spec(tmp_path, f"""
experiment masked {{
    model = "builtin:tiny-llama"
    data {{ source = tokens("{data}", mask_field = "keep")  batch_size = {batch_size} }}
    capture resid_out[0] {{ aggregate = mean(mask = field("keep")) }}
    output {{ dir = "{tmp_path / 'run'}" }}
}}
""")
    proc = expc_cli("run", str(spec), "--quiet", "--nproc", str(nproc),
                    env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    assert f"{data}:2:" in proc.stderr and "no token" in proc.stderr
    for echo in ("Traceback", "ChildFailedError", "FAILED", "Connection closed", "internal"):
        assert echo not in proc.stderr + proc.stdout, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    [diagnostic] = manifest["error"]["diagnostics"]
    assert (diagnostic["code"], diagnostic["path"], diagnostic["line"]) == (
        "empty-mask", str(data), 2)


def test_refuses_a_folder_holding_another_spec(tmp_path):
    base = """
experiment e {{
    model = "builtin:tiny-llama"
    data {{ source = jsonl("examples/data/prompts.jsonl", field = "text")  limit = {n} }}
    capture resid_out[0] {{ aggregate = mean }}
    output {{ dir = "{out}" }}
}}
"""
    out = tmp_path / "run"
    first = write_spec(tmp_path, base.format(n=4, out=out), name="a.exp")
    second = write_spec(tmp_path, base.format(n=6, out=out), name="b.exp")
    assert expc_cli("run", str(first), "--quiet").returncode == 0
    refused = expc_cli("run", str(second), "--quiet")
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert expc.open_run(out).manifest["data"]["samples"] == 4
    assert expc_cli("run", str(second), "--quiet", "--force").returncode == 0
    assert expc.open_run(out).manifest["data"]["samples"] == 6


# Examples that read an earlier run folder (`run = "..."`) need their companion run first:
# tests/runtime/test_examples_with_sources.py runs them that way.
@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*.exp")
                                           if 'run = "' not in p.read_text()))
def test_every_example_runs_to_a_complete_folder(tmp_path, example):
    out = tmp_path / "run"
    proc = expc_cli("run", f"examples/{example}", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    run = expc.open_run(out)
    assert run.status == "complete"
    assert len(run.tensors) > 2  # more than the meta keys
    for key in run.tensors:
        assert torch.isfinite(run.tensors[key].double()).all(), key


def test_full_attention_pattern_matches_transformers(hf_llama):
    folder, model, samples = hf_llama
    spec = write_spec(folder, f"""
experiment patterns {{
    model = "{folder / 'ckpt'}"
    data {{ source = tokens("{folder / 'data.jsonl'}")  batch_size = 4 }}
    capture attn_pattern[1] {{ aggregate = full }}
    output {{ dir = "{folder / 'run_patterns'}" }}
}}
""", name="patterns.exp")
    results = expc.run(spec)
    stored = results["capture/attn_pattern_1"]  # [N, A, S, S]
    assert stored.shape[:2] == (len(samples), 4)
    model.set_attn_implementation("eager")
    for index, ids in enumerate(samples):
        with torch.no_grad():
            expected = model(torch.tensor([ids]), output_attentions=True).attentions[1][0]
        n = len(ids)
        torch.testing.assert_close(stored[index, :, :n, :n], expected, atol=1e-5, rtol=1e-4)
        assert results["capture/attn_pattern_1.mask"][index].sum() == n
