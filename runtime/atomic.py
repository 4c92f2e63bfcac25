"""Atomic file writes: a crash leaves the old file or the new one, never a torn one.

Contracts §3 promise this for every file of a run folder. Each write goes to a temporary
file in the destination's folder (same file system, so the rename is atomic), is flushed and
fsynced, then `os.replace`d over the destination, and the folder itself is fsynced so the
rename survives a power loss. If anything fails before the rename, the temporary file is
removed and the destination is untouched. A write the file system refuses (a read-only or
full disk, a folder where a file should be, a name too long) is a `DiagnosticError` naming
the path: one mechanism for every file of a run folder, so none of them can end in a
traceback. Tensors are saved the same way by `expc.runtime.atomic_tensors`, apart so that
what only writes files (`expc prune`) never imports torch.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from safetensors import SafetensorError

from expc.spec.diagnostics import fail

TEMP_SUFFIX = ".tmp"
IO_CODE = "run-folder-io"


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with replacing(Path(path)) as temp:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_json_atomic(path: str | Path, value) -> None:
    """Write `value` as indented UTF-8 JSON to `path` atomically."""
    text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def is_temp_of(name: str, target: str) -> bool:
    """Whether `name` is a temporary file an atomic write of `target` (a file name or a
    glob pattern of names) makes, or left behind."""
    return fnmatch.fnmatchcase(name, f".{target}.*{TEMP_SUFFIX}")


def remove_stale_temps(folder: str | Path, *, accept: Callable[[str], bool] = lambda n: True
                       ) -> None:
    """Delete temporary files a crashed atomic write left behind in `folder`."""
    with os_errors_named(Path(folder)):
        for entry in Path(folder).glob(f".*{TEMP_SUFFIX}"):
            if accept(entry.name) and not entry.is_symlink() and entry.is_file():
                entry.unlink(missing_ok=True)


@contextlib.contextmanager
def os_errors_named(path: Path, *, doing: str = "write") -> Iterator[None]:
    """Turn the file system's refusal to `doing` `path` into a diagnostic naming it."""
    try:
        yield
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise fail(str(path).encode("utf-8", "backslashreplace").decode("utf-8"),
                   f"cannot {doing} `{path.name}`: {reason}", code=IO_CODE,
                   help=["check that the run folder is writable and its disk not full"]
                   ) from None


@contextlib.contextmanager
def replacing(path: Path, *, sync_folder: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, else delete it."""
    with os_errors_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
        try:
            yield temp
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if sync_folder:
            fsync_path(path.parent)


def fsync_folder(folder: str | Path) -> None:
    """Make the renames into `folder` durable (after writes with `sync_folder=False`)."""
    with os_errors_named(Path(folder)):
        fsync_path(Path(folder))


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by its path (a read-only descriptor serves both)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
