"""One writer per run folder: an exclusive lock held for the whole of `expc run`.

Two runs writing one folder would interleave manifests, checkpoints and results. The lock is
an advisory `flock` on a lock file in the folder, so the operating system releases it when
its holder dies, however it dies: a lock left by a killed run is stale by construction and
the next run simply takes it. The file records the holder (pid, host, start time) so the
refusal can say who holds the folder. The file is removed on release; a run that opened the
old file just before is told by the inode check and tries again.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from expc.spec.diagnostics import fail

LOCK_FILE = ".expc.lock"


def _holder_text() -> str:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})


def _describe_holder(fd: int) -> str:
    """Who holds the lock, from what its holder wrote (best effort: it may be mid-write)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {int(holder['pid'])} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _acquire(path: Path) -> int:
    """An open descriptor of `path` with the exclusive lock taken; refuse if it is held."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise fail(path.parent, f"`{path.parent}` is being written by another expc run "
                       f"({holder})", code="run-folder-locked",
                       help=["wait for that run to finish, or choose another output dir"]
                       ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the previous holder removed it as we opened it
            same_file = False
        if same_file:
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold `run_dir`'s writer lock for the body; raise a `DiagnosticError` if another
    process holds it. Creates the folder (not its parents' contents) if needed."""
    folder = Path(run_dir)
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL or a lone surrogate in the path
        reason = getattr(exc, "strerror", None) or exc
        raise fail(str(folder).encode("utf-8", "backslashreplace").decode("utf-8"),
                   f"cannot write the run folder there: {reason}", code="run-folder",
                   help=["choose an output dir you can write to"]) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode("utf-8"), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):  # gone already, or the folder turned read-only
            path.unlink()  # while still held, so no one else can be holding this inode
        os.close(fd)
