"""The run rejects what `expc check` rejects, with the same diagnostic and exit 1 — a missing
CUDA device, `iterative_channel` under `--nproc`, a mask field the data lacks — and an
unset `max_length` means the model's maximum (issue 12, items 6 and 8)."""

from __future__ import annotations

import pytest
import torch

from expc.cli import main
from expc.runtime.data.load import load_data
from expc.runtime.device import resolve_device
from expc.spec.diagnostics import DiagnosticError, Span

SPEC = """\
experiment r {{
    model = "{model}"
    data {{ source = {source}  batch_size = 2 }}
    {body}
}}
"""


def _run(tmp_path, monkeypatch, capsys, *, body: str, args=(), model="builtin:tiny-llama",
         source='jsonl("d.jsonl")', data='{"text": "hello"}\n{"text": "world"}\n'):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text(data)
    (tmp_path / "s.exp").write_text(SPEC.format(model=model, source=source, body=body))
    with pytest.raises(SystemExit) as info:
        main(["run", "s.exp", "--out", "out", "-q", *args])
    return info.value.code, capsys.readouterr().err


def test_cuda_on_a_machine_without_one_is_a_diagnostic_at_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    span = Span(path="s.exp", line=3, col=14)
    with pytest.raises(DiagnosticError) as info:
        resolve_device("cuda:0", span=span)
    (d,) = info.value.diagnostics
    assert d.code == "device" and d.span == span and "no usable CUDA GPU" in d.message
    assert resolve_device("cpu").type == "cpu"


def test_nproc_refuses_iterative_channel_before_launching(tmp_path, monkeypatch, capsys):
    launched = []
    monkeypatch.setattr("expc.cli.run._launch", lambda *a: launched.append(a) or 0)
    code, err = _run(tmp_path, monkeypatch, capsys, args=("--nproc", "2"),
                     body="importance iterative_channel at mlp.down_proj[1] { iterations = 1 }")
    assert code == 1 and launched == []
    assert "s.exp:4:5: error: iterative_channel cannot run sharded across processes" in err


def test_run_refuses_a_field_mask_the_data_lacks(tmp_path, monkeypatch, capsys):
    code, err = _run(tmp_path, monkeypatch, capsys,
                     source='jsonl("d.jsonl", mask_field = "m")',
                     data='{"text": "hi", "m": [1, 1, 1, 1]}\n',
                     body='capture resid_out[0] { aggregate = mean(mask = field("other")) }')
    assert code == 1 and '`field("other")` names no mask field of the data' in err
    assert not (tmp_path / "out").exists()


def test_unset_max_length_is_the_models_positions(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("x" * 3000 + "\n")
    data = load_data(kind="text", path=path, tokenizer=_Bytes(), max_positions=512)
    assert data.n_tokens == 512
    assert load_data(kind="text", path=path, tokenizer=_Bytes(), max_length=8,
                     max_positions=512).n_tokens == 8


class _Bytes:
    pad_token_id = 0

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        ids = list(text.encode())
        return ids if max_length is None else ids[:max_length]


def test_text_longer_than_berts_positions_runs(tmp_path, monkeypatch, capsys):
    code, err = _run(tmp_path, monkeypatch, capsys, model="builtin:tiny-bert",
                     data='{"text": "' + "long text " * 200 + '"}\n',
                     body="capture resid_out[-1]")
    assert code in (0, None), err  # crashed past BERT's 512 positions before
