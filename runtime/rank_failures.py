"""Which rank of a torchrun job failed first, and why: one small file per failing rank.

When one rank fails, the others fail after it and because of it: torchrun's agent SIGTERMs
them, or their next collective breaks with gloo's "Connection closed by peer". Rank 0 writes
the manifest and is the rank whose output the user sees, so it must report the cause, not
an echo. Every other rank that fails once rank 0 holds the run folder (after the start
barrier) therefore writes `.rank<N>-error.json` into it — its diagnostics, message and time —
before its connections close; rank 0, failing, ends with the earliest failure on record that
is not a stop signal, its own included. A rank writes its file before its failure can reach
any other rank, so the cause is on disk before any of its echoes happens. Rank 0 removes the
previous run's files when it claims the folder; a rank killed outright leaves none, and rank
0 then reports its own failure.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

from expc.runtime.atomic import write_json_atomic
from expc.runtime.stop_signals import Interrupted
from expc.spec.diagnostics import Diagnostic, DiagnosticError, error
from expc.spec.run_format import RANK_ERROR_PATTERN

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"\.rank(\d+)-error\.json")


def failure_path(run_dir: Path, rank: int) -> Path:
    return run_dir / RANK_ERROR_PATTERN.replace("*", str(rank))


class RankFailed(RuntimeError):
    """Another rank's internal error (no diagnostics), as rank 0 reports it."""


@attrs.frozen(kw_only=True)
class RankFailure:
    """One rank's failure: when, whether a stop signal caused it, and what it said."""

    rank: int
    time: float  # seconds since the epoch (the ranks of `--nproc` share one clock)
    stopped: bool  # a stop signal (torchrun stops the other ranks when one fails)
    message: str
    diagnostics: tuple[Diagnostic, ...] = ()

    @classmethod
    def of(cls, exc: BaseException, *, rank: int) -> RankFailure:
        diagnostics = tuple(getattr(exc, "diagnostics", ()))
        return cls(rank=rank, time=time.time(), stopped=isinstance(exc, Interrupted),
                   message=str(exc) if diagnostics else f"{type(exc).__name__}: {exc}",
                   diagnostics=diagnostics)

    def to_json(self) -> dict:
        return {"rank": self.rank, "time": self.time, "stopped": self.stopped,
                "message": self.message, "diagnostics": [d.to_json() for d in self.diagnostics]}

    @classmethod
    def from_json(cls, value: dict) -> RankFailure:
        return cls(rank=int(value["rank"]), time=float(value["time"]),
                   stopped=bool(value["stopped"]), message=str(value["message"]),
                   diagnostics=tuple(_diagnostic(d) for d in value["diagnostics"]))

    def exception(self) -> Exception:
        """What rank 0 raises for this failure: its diagnostics, rendered as any run's are."""
        if self.diagnostics:
            return DiagnosticError(self.diagnostics)
        return RankFailed(f"rank {self.rank} failed: {self.message}")


def _diagnostic(value: dict) -> Diagnostic:
    return error(str(value["path"]), str(value["message"]), code=str(value["code"]),
                 line=int(value["line"]), col=int(value["col"]),
                 end_line=int(value["end_line"]), end_col=int(value["end_col"]),
                 help=[str(h) for h in value["help"]])


def _recorded(run_dir: Path) -> Iterable[Path]:
    return (path for path in run_dir.glob(RANK_ERROR_PATTERN)
            if FILE_PATTERN.fullmatch(path.name))


def clear_failures(run_dir: Path) -> None:
    """Remove the failure files of an earlier run (rank 0, once it holds the folder)."""
    for path in _recorded(run_dir):
        path.unlink(missing_ok=True)


def read_failures(run_dir: Path) -> list[RankFailure]:
    """Every failure on record; a file that cannot be read is skipped (it explains nothing)."""
    failures = []
    for path in _recorded(run_dir):
        try:
            failures.append(RankFailure.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("ignoring %s: %s", path, exc)
    return failures


def first_failure(failures: Iterable[RankFailure]) -> RankFailure:
    """The failure that caused the others: the earliest that is not a stop signal."""
    return min(failures, key=lambda f: (f.stopped, f.time, f.rank))


def settle(exc: BaseException, *, rank: int, distributed: bool,
           run_dir: Path) -> BaseException:
    """The exception this rank's failed run ends with (call it in the run's `except`).

    Another rank records its failure for rank 0 and keeps its own exception; rank 0 ends with
    the first failure on record, and with its own exception when that is its own or when
    every rank was stopped (Ctrl-C stops them all; each saved its checkpoint).
    """
    if not distributed:
        return exc
    own = RankFailure.of(exc, rank=rank)
    if rank != 0:
        try:
            write_json_atomic(failure_path(run_dir, rank), own.to_json())
        except (OSError, ValueError) as unwritable:  # rank 0 then reports its own failure
            log.warning("cannot record rank %d's failure: %s", rank, unwritable)
        return exc
    first = first_failure([own, *read_failures(run_dir)])
    return exc if first is own or first.stopped else first.exception()  # a stop: its own
