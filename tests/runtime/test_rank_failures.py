"""The first failing rank's error is the run's: records, the choice, what rank 0 raises."""

from __future__ import annotations

import json
import signal

from expc.runtime.distributed import World, ignore_launcher_stop
from expc.runtime.rank_failures import (RankFailed, RankFailure, clear_failures, failure_path,
                                        first_failure, read_failures, settle)
from expc.runtime.stop_signals import Interrupted
from expc.spec.diagnostics import DiagnosticError, fail


def empty_mask(path: str = "data.jsonl", line: int = 2) -> DiagnosticError:
    return fail(path, "sample 1: the mask selects no token", code="empty-mask", line=line,
                help=["fix the data"])


def test_another_rank_records_its_failure_and_keeps_its_exception(tmp_path):
    exc = empty_mask()
    assert settle(exc, rank=1, distributed=True, run_dir=tmp_path) is exc
    [recorded] = read_failures(tmp_path)
    assert recorded.rank == 1 and not recorded.stopped
    assert recorded.diagnostics == exc.diagnostics  # help, line and columns survive JSON


def test_rank0_ends_with_the_earlier_failure_of_another_rank(tmp_path):
    settle(empty_mask(), rank=1, distributed=True, run_dir=tmp_path)
    echo = RuntimeError("Connection closed by peer")  # what rank 0 sees after rank 1 left
    cause = settle(echo, rank=0, distributed=True, run_dir=tmp_path)
    assert isinstance(cause, DiagnosticError)
    assert cause.diagnostics == empty_mask().diagnostics


def test_rank0_keeps_its_own_failure_when_it_came_first(tmp_path):
    own = empty_mask(line=1)
    write_record(tmp_path, rank=1, time=float("1e12"), message="RuntimeError: closed")
    assert settle(own, rank=0, distributed=True, run_dir=tmp_path) is own


def test_a_stop_signal_is_never_the_cause_while_a_real_failure_is_on_record(tmp_path):
    write_record(tmp_path, rank=1, time=float("1e12"), message="RuntimeError: boom")
    stopped = Interrupted(signal_name="SIGTERM")  # torchrun stopped rank 0 for rank 1's sake
    cause = settle(stopped, rank=0, distributed=True, run_dir=tmp_path)
    assert isinstance(cause, RankFailed) and str(cause) == "rank 1 failed: RuntimeError: boom"
    only_stops = [RankFailure(rank=r, time=t, stopped=True, message="stopped")
                  for r, t in ((0, 2.0), (1, 1.0))]
    assert first_failure(only_stops).rank == 1


def test_one_process_records_nothing(tmp_path):
    exc = empty_mask()
    assert settle(exc, rank=0, distributed=False, run_dir=tmp_path) is exc
    assert list(tmp_path.iterdir()) == []


def test_unreadable_records_are_skipped_and_only_records_are_cleared(tmp_path):
    failure_path(tmp_path, 3).write_text("[" * 100_000)
    failure_path(tmp_path, 4).write_text('{"rank": 4}')
    write_record(tmp_path, rank=2, time=5.0, message="RuntimeError: x")
    assert [f.rank for f in read_failures(tmp_path)] == [2]
    keep = [tmp_path / ".rank1-error.json.tmp", tmp_path / "rank1-error.json",
            tmp_path / ".rankx-error.json"]
    for path in keep:
        path.write_text("user file")
    clear_failures(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_a_settled_rank_ignores_the_launchers_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        ignore_launcher_stop(World())
        assert signal.getsignal(signal.SIGTERM) == previous  # one process: untouched
        ignore_launcher_stop(World(rank=0, size=2))
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_record(folder, *, rank: int, time: float, message: str, stopped: bool = False) -> None:
    failure_path(folder, rank).write_text(json.dumps(
        {"rank": rank, "time": time, "stopped": stopped, "message": message, "diagnostics": []}))


def test_when_every_rank_was_stopped_rank0_keeps_its_own_stop(tmp_path):
    """Ctrl-C reaches torchrun's agent, which stops every rank: rank 0's own stop message
    (with its resume hint) is the report, whichever rank stopped first."""
    write_record(tmp_path, rank=1, time=1.0, message="Interrupted: stopped by SIGINT",
                 stopped=True)
    own = Interrupted(signal_name="SIGINT", batches_done=3)
    assert settle(own, rank=0, distributed=True, run_dir=tmp_path) is own
