"""`expc run --nproc N` after a failed launch: rank 0's report, else one that stands for it."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from expc.cli.run import _report_failure


def failure(local_rank: int, exitcode: int) -> SimpleNamespace:  # a torchrun ProcessFailure
    return SimpleNamespace(local_rank=local_rank, exitcode=exitcode)


@pytest.fixture
def logs(tmp_path):
    """torchrun's log folder, with rank 1's stderr as `expc run` printed it."""
    rank1 = tmp_path / "run-id_x" / "attempt_0" / "1"
    rank1.mkdir(parents=True)
    (rank1 / "stderr.log").write_text("spec.exp:4:13: error: unknown capture site\n")
    return tmp_path


def test_rank0_reported_a_user_error_nothing_more_is_said(logs, capsys):
    assert _report_failure({0: failure(0, 1), 1: failure(1, 1)}, logs) == 1
    assert capsys.readouterr().err == ""


def test_rank0_stopped_before_it_printed_another_ranks_report_stands_in(logs, capsys):
    assert _report_failure({0: failure(0, -signal.SIGTERM), 1: failure(1, 1)}, logs) == 1
    assert capsys.readouterr().err == "spec.exp:4:13: error: unknown capture site\n"


def test_an_internal_error_names_the_rank_and_keeps_the_logs(logs, capsys):
    assert _report_failure({0: failure(0, 2), 1: failure(1, 1)}, logs) == 2
    assert capsys.readouterr().err == (f"rank 0 failed (exit status 2); every rank's output "
                                       f"is in {logs}\n")
    # rank 1 was killed (out of memory): rank 0's broken connection is only the echo
    assert _report_failure({0: failure(0, 2), 1: failure(1, -signal.SIGKILL)}, logs) == 2
    assert "rank 1 failed (killed by SIGKILL)" in capsys.readouterr().err
