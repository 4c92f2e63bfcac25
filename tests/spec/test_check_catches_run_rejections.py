"""`expc check` catches what the run would reject: a mask field the data lacks, more
`iterative_channel` rounds than batches, a missing CUDA device, a site the model lacks, a
model too large for the machine, a `max_length` past the model's positions (issue 12,
items 6 and 8)."""

from __future__ import annotations

import json

import pytest

from expc.spec import model_checks
from tests.spec.conftest import spec_with

MASKED_SOURCE = 'source = jsonl("data.jsonl", field = "text", mask_field = "m")'


def _only(diags, code: str):
    found = [d for d in diags if d.code == code]
    assert len(found) == 1, diags
    return found[0]


@pytest.fixture
def masked_data(workdir):
    (workdir / "data.jsonl").write_text('{"text": "hi", "m": [0, 1, 1]}\n')


def test_field_mask_must_name_the_sources_mask_field(diagnose, masked_data):
    text = spec_with('capture resid_out[0] { aggregate = mean(mask = field("other")) }')
    text = text.replace('source = jsonl("data.jsonl", field = "text")', MASKED_SOURCE)
    d = _only(diagnose(text, check_model=False), "mask-field")
    assert '`field("other")` names no mask field of the data' in d.message
    assert '`mask_field = "m"`' in d.message and d.span.line == 7
    assert 'write `field("m")`' in d.help[0]
    matching = text.replace('field("other")', 'field("m")')
    assert diagnose(matching, check_model=False) == ()


def test_field_mask_without_any_mask_field(diagnose):
    text = spec_with('capture resid_out[0] { aggregate = sum(mask = field("m")) }')
    d = _only(diagnose(text, check_model=False), "mask-field")
    assert "gives none" in d.message and 'add `mask_field = "m"`' in d.help[0]


def test_iterations_beyond_the_batches_of_the_data(diagnose):
    # data.jsonl holds 2 samples; batch_size 2 gives one batch.
    text = spec_with("importance iterative_channel at mlp.down_proj[0] { iterations = 4 }")
    d = _only(diagnose(text), "iterations")
    assert "needs at least 4 batches" in d.message and "the data gives 1 (2 samples" in d.message
    assert d.span.line == 7
    assert diagnose(text.replace("iterations = 4", "iterations = 1")) == ()
    assert diagnose(text, check_model=False) == ()  # no data file needed without model checks


def test_default_iterations_count_too_and_limit_is_honoured(diagnose, workdir):
    (workdir / "data.jsonl").write_text("".join('{"text": "x"}\n\n' for _ in range(40)))
    text = spec_with("importance iterative_channel at mlp.down_proj[0]")  # iterations = 8
    assert diagnose(text) == ()  # 40 samples (blank lines skipped) / 2 = 20 batches
    limited = text.replace("batch_size = 2", "batch_size = 2\n        limit = 6")
    assert "the data gives 3 (6 samples" in _only(diagnose(limited), "iterations").message


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu(diagnose, monkeypatch, device):
    monkeypatch.setattr(model_checks, "visible_gpus", lambda: 0)
    d = _only(diagnose(spec_with(f"device = {device}")), "device")
    assert "no usable CUDA GPU" in d.message and (d.span.line, d.span.col) == (7, 14)
    assert diagnose(spec_with(f"device = {device}"), check_model=False) == ()


def test_cuda_index_past_the_gpus(diagnose, monkeypatch):
    monkeypatch.setattr(model_checks, "visible_gpus", lambda: 1)
    assert "has 1 CUDA GPU (cuda:0..cuda:0)" in _only(
        diagnose(spec_with("device = cuda:1")), "device").message
    assert diagnose(spec_with("device = cuda:0")) == ()


def test_logits_on_an_encoder(diagnose):
    text = spec_with("capture logits").replace("tiny-llama", "tiny-bert")
    d = _only(diagnose(text), "site")
    assert "bert models have no `logits`" in d.message and d.span.line == 7
    assert diagnose(spec_with("capture final_norm").replace("tiny-llama", "tiny-bert")) == ()
    assert diagnose(spec_with("capture logits")) == ()


def test_the_logit_lens_on_an_encoder(diagnose):
    text = spec_with("capture lens[*]").replace("tiny-llama", "tiny-bert")
    assert "bert models have no `lens`" in _only(diagnose(text), "site").message
    assert diagnose(spec_with("capture lens[*]")) == ()
    for site in ("mlp_post", "q", "k", "v", "z"):
        assert diagnose(spec_with(f"capture {site}[*]").replace("tiny-llama", "tiny-bert")) == ()


def test_a_million_heads_are_refused_with_an_estimate(diagnose, monkeypatch):
    monkeypatch.setattr(model_checks, "machine_memory", lambda: 64 << 30)
    d = _only(diagnose(spec_with("hydra { trunk = 2 heads = 1000000 }")), "memory")
    assert "would need about" in d.message and "1,000,000 heads" in d.message
    assert "this machine has 64.0 GiB" in d.message and d.span.line == 7
    assert diagnose(spec_with("hydra { trunk = 2 heads = 3 }")) == ()


def test_a_config_with_200000_layers_is_refused(diagnose, workdir, monkeypatch):
    monkeypatch.setattr(model_checks, "machine_memory", lambda: 64 << 30)
    from expc.spec.builtin_models import BUILTIN_CONFIGS

    (workdir / "big").mkdir()
    config = {**BUILTIN_CONFIGS["tiny-llama"], "num_hidden_layers": 200_000,
              "hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
              "num_key_value_heads": 8}
    (workdir / "big" / "config.json").write_text(json.dumps(config))
    d = _only(diagnose(spec_with("").replace("builtin:tiny-llama", "big")), "memory")
    assert "200,000 layers" in d.message and d.span.line == 2


def test_max_length_above_the_models_positions(diagnose):
    text = spec_with("").replace("batch_size = 2", "batch_size = 2\n        max_length = 513")
    d = _only(diagnose(text.replace("tiny-llama", "tiny-bert")), "range")
    assert "exceeds the model's 512 positions" in d.message


def test_gpu_count_from_the_driver_files(monkeypatch):
    from expc.spec import devices

    present = {devices.DRIVER_FILE}
    monkeypatch.setattr(devices.os.path, "exists", lambda p: p in present)
    monkeypatch.setattr(devices.os, "listdir", lambda p: ["nvidia0", "nvidia1", "nvidiactl"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.visible_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.visible_gpus() == 0
    present.add("/dev/dxg")  # WSL: the files cannot tell, so nothing is refused
    assert devices.visible_gpus() is None and devices.cuda_problem("cuda:3", None) is None
    present.clear()
    assert devices.visible_gpus() == 0
