"""A run whose results would hold NaN or inf fails, naming key, layer, head and sample (issue 12).

Before, a NaN weight or an inf embedding row gave a `complete` run of NaN tensors. The
checkpoints here are tiny random Llamas saved by transformers and then doctored.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import expc
from expc.spec.diagnostics import DiagnosticError

REPO = Path(__file__).resolve().parents[2]
VOCAB = 97
RARE = 96  # a token id that only the sample on line RARE_LINE holds
RARE_LINE = 5


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint (3 layers) and `tokens` data of 8 samples."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("finite")
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder / "ckpt")
    generator = torch.Generator().manual_seed(1)
    lines = []
    for line in range(1, 9):
        ids = torch.randint(1, RARE, (3 + 2 * line,), generator=generator).tolist()
        if line == RARE_LINE:
            ids[-1] = RARE  # last token: `mask = first` never selects it, nor sees it (causal)
        lines.append(json.dumps({"input_ids": ids}) + "\n")
    (folder / "data.jsonl").write_text("".join(lines))
    return folder


def doctored(clean: Path, tmp_path: Path, **changes: tuple[tuple[int, ...], float]) -> Path:
    """A copy of the clean checkpoint with single weights set, `{name: (index, value)}`."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for path in (clean / "ckpt").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    tensors = load_file(folder / "model.safetensors")
    for name, (index, value) in changes.items():
        tensors[name.replace("__", ".")][index] = value
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def spec(tmp_path: Path, model: Path, data: Path, body: str, *, hydra: str = "") -> Path:
    path = tmp_path / "spec.exp"
    path.write_text(f"""
experiment finite {{
    model = "{model}"
    {hydra}
    data {{ source = tokens("{data}")  batch_size = 3 }}
    {body}
    output {{ dir = "{tmp_path / 'run'}" }}
}}
""")
    return path


def manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "manifest.json").read_text())


def test_a_nan_weight_fails_the_run_naming_key_layer_head_and_sample(clean, tmp_path):
    model = doctored(clean, tmp_path,
                     model__layers__1__mlp__down_proj__weight=((3, 5), float("nan")))
    path = spec(tmp_path, model, clean / "data.jsonl", hydra="hydra { trunk = 1  heads = 2 }",
                body="capture resid_out[*] { aggregate = mean }\n"
                     "    importance l2_norm at mlp.down_proj[*]")
    proc = subprocess.run([sys.executable, "-m", "expc", "run", str(path), "--quiet"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    found = manifest(tmp_path)
    assert found["status"] == "failed"
    (diagnostic,) = found["error"]["diagnostics"]
    assert diagnostic["code"] == "nonfinite"
    # the first place the NaN shows: layer 1's output in head 0, in the first batch run
    assert "capture/head0/resid_out_1 (layer 1, head 0)" in diagnostic["message"]
    assert diagnostic["path"] == str(clean / "data.jsonl")
    assert f"{clean / 'data.jsonl'}:{diagnostic['line']}:" in proc.stderr
    assert f"sample {diagnostic['line'] - 1}:" in diagnostic["message"]
    assert not (tmp_path / "run" / "results.safetensors").exists()


@pytest.mark.parametrize("check_each", [1, 64], ids=["cpu-every-batch", "accelerator-policy"])
def test_an_inf_embedding_row_names_the_one_sample_that_uses_it(clean, tmp_path, monkeypatch,
                                                                check_each):
    """Checked after every batch (CPU) or once at the end (as an accelerator would, every 64
    batches): the same sample is named, since the queued sums keep their batch numbers."""
    monkeypatch.setattr("expc.runtime.execute.check_every", lambda device: check_each)
    model = doctored(clean, tmp_path, model__embed_tokens__weight=((RARE, 0), float("inf")))
    path = spec(tmp_path, model, clean / "data.jsonl",
                body="capture resid_out[0] { aggregate = full }")
    with pytest.raises(DiagnosticError) as caught:
        expc.run(path)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.span.path, diagnostic.span.line) == (str(clean / "data.jsonl"), RARE_LINE)
    assert "capture/resid_out_0 (layer 0)" in diagnostic.message
    assert manifest(tmp_path)["status"] == "failed"


def test_a_value_no_mask_selects_does_not_count(clean, tmp_path):
    """The inf token is the last of its sample, and the embedding is per token: `mask = first`
    never selects it, so the run completes; `mask = last` selects it and fails. (Past an
    attention layer every position of the sample is NaN: the additive mask turns a masked
    NaN key into a NaN score, so those values do reach the results.)"""
    model = doctored(clean, tmp_path, model__embed_tokens__weight=((RARE, 0), float("inf")))
    path = spec(tmp_path, model, clean / "data.jsonl",
                body="capture embed { aggregate = mean(mask = first) }")
    expc.run(path)
    assert manifest(tmp_path)["status"] == "complete"
    path = spec(tmp_path, model, clean / "data.jsonl",
                body="capture embed { aggregate = max(mask = last) }")
    with pytest.raises(DiagnosticError) as caught:
        expc.run(path, force=True)
    assert caught.value.diagnostics[0].span.line == RARE_LINE
    assert "capture/embed" in caught.value.diagnostics[0].message


def test_padding_holding_nan_does_not_count(clean, tmp_path):
    """The pad token's embedding is NaN, so padded positions compute NaN up to the first
    attention layer (by design they may hold anything): no aggregation or metric of
    those sites may count them."""
    model = doctored(clean, tmp_path, model__embed_tokens__weight=((0, 1), float("nan")))
    path = spec(tmp_path, model, clean / "data.jsonl",
                body="capture embed { aggregate = mean }\n"
                     "    capture embed as total { aggregate = sum }\n"
                     "    capture embed as top { aggregate = max }\n"
                     "    capture embed as every { aggregate = full }\n"
                     "    capture embed as moments { aggregate = dataset_mean }\n"
                     "    importance layernorm_contribution at input_layernorm[0]\n"
                     "    importance channel_contribution at self_attn.q_proj[0]\n"
                     "    importance l2_norm at self_attn.k_proj[0]\n"
                     "    importance iterative_channel at self_attn.v_proj[0] "
                     "{ iterations = 2 }")
    results = expc.run(path)
    assert manifest(tmp_path)["status"] == "complete"
    for key in results:
        assert torch.isfinite(results[key].double()).all(), key
    assert not results["capture/every"][~results["capture/every.mask"]].any()


def test_attention_patterns_of_padded_batches_are_finite_with_zeros_where_masked(clean,
                                                                                  tmp_path):
    path = spec(tmp_path, clean / "ckpt", clean / "data.jsonl",
                body="capture attn_pattern[*] { aggregate = full }")
    results = expc.run(path)
    for layer in range(3):
        pattern = results[f"capture/attn_pattern_{layer}"]  # [N, A, S_q, S_k]
        mask = results[f"capture/attn_pattern_{layer}.mask"]  # [N, S_q]
        assert torch.isfinite(pattern).all()
        keys = mask[:, None, None, :].expand_as(pattern)
        assert not pattern[~keys].any()  # padded keys (and padded queries) are exact zeros


def test_a_nan_weight_only_the_finish_sees_fails_at_the_statement(clean, tmp_path):
    """A NaN in the last layer's down_proj weight: no batch sees it (nothing after it is
    captured), but channel_contribution's weight norm does at the finish."""
    model = doctored(clean, tmp_path,
                     model__layers__2__mlp__down_proj__weight=((0, 7), float("nan")))
    path = spec(tmp_path, model, clean / "data.jsonl",
                body="importance channel_contribution at mlp.down_proj[2]")
    with pytest.raises(DiagnosticError) as caught:
        expc.run(path)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "nonfinite"
    assert diagnostic.span.path == str(path) and diagnostic.span.line == 6
    assert diagnostic.message.startswith(
        "importance/channel_contribution/layers.2.mlp.down_proj/score (layer 2) holds 1 NaN")
    assert manifest(tmp_path)["status"] == "failed"
