"""Checkpoints (runtime/checkpoint.py): round trip, per-rank files, crashes at every step.

(Named apart from tests/models/test_checkpoint.py: pytest's default import mode needs unique
test file names across folders without `__init__.py`.)
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from expc.runtime import atomic, checkpoint
from expc.runtime.aggregate.per_sample import PerSampleAggregator
from expc.runtime.checkpoint import Cursor, cursor_name, load_checkpoint, save_checkpoint
from expc.runtime.data.load import TokenizedData
from expc.runtime.data.batches import iter_batches, plan_batches
from expc.runtime.fingerprint import file_digest
from expc.spec.diagnostics import DiagnosticError


class Crash(Exception):
    pass


def crash(*args, **kwargs):
    raise Crash


def states_at(step: int) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "capture/head1/resid_out_3": {"sum": torch.full((2, 4), float(step)),
                                      "count": torch.tensor(step)},
        "importance/l2_norm/layers.0.mlp.down_proj": {"acc": torch.arange(3.0) * step,
                                                       "rows": torch.tensor([step, 1])},
        "nothing_yet": {},
    }


def cursor_at(step: int, **extra) -> Cursor:
    return Cursor(batches_done=step, samples_done=4 * step, elapsed_seconds=0.5 * step,
                  **extra)


def assert_states_equal(got, want):
    assert list(got) == list(want)
    for name in want:
        assert list(got[name]) == list(want[name])
        for key in want[name]:
            assert got[name][key].dtype == want[name][key].dtype
            assert torch.equal(got[name][key], want[name][key])


def test_no_checkpoint_is_none(tmp_path):
    assert load_checkpoint(tmp_path / "checkpoint") is None


FINGERPRINT = {"experiment": "e1", "data": "d1", "model": "m1", "processes": "1"}


def test_round_trip_with_fingerprint(tmp_path):
    save_checkpoint(tmp_path, states=states_at(3), cursor=cursor_at(3, fingerprint=FINGERPRINT))
    states, cursor = load_checkpoint(tmp_path, fingerprint=FINGERPRINT)
    assert_states_equal(states, states_at(3))
    assert cursor == cursor_at(3, fingerprint=FINGERPRINT)


def test_a_checkpoint_with_the_dropped_tokens_done_and_rng_entries_still_loads(tmp_path):
    save_checkpoint(tmp_path, states=states_at(3), cursor=cursor_at(3))
    state_path = tmp_path / "rank0-state-00000003.safetensors"
    with safe_open(str(state_path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    save_file({**tensors, "rng": torch.get_rng_state()}, str(state_path), metadata=metadata)
    cursor_path = tmp_path / cursor_name(0)
    record = json.loads(cursor_path.read_text())
    record.update(tokens_done=0, state_bytes=state_path.stat().st_size,
                  state_sha256=file_digest(state_path))
    cursor_path.write_text(json.dumps(record))
    states, cursor = load_checkpoint(tmp_path)
    assert_states_equal(states, states_at(3))
    assert cursor == cursor_at(3)


def test_a_new_checkpoint_supersedes_the_old_state_file(tmp_path):
    save_checkpoint(tmp_path, states=states_at(2), cursor=cursor_at(2))
    save_checkpoint(tmp_path, states=states_at(4), cursor=cursor_at(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rank0-cursor.json", "rank0-state-00000004.safetensors"]
    states, cursor = load_checkpoint(tmp_path)
    assert cursor.batches_done == 4
    assert_states_equal(states, states_at(4))


def test_crash_between_state_and_cursor_resumes_from_previous(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, states=states_at(4), cursor=cursor_at(4))
    monkeypatch.setattr(checkpoint, "write_json_atomic", crash)
    with pytest.raises(Crash):
        save_checkpoint(tmp_path, states=states_at(8), cursor=cursor_at(8))
    assert (tmp_path / "rank0-state-00000008.safetensors").exists()  # written, not named
    states, cursor = load_checkpoint(tmp_path)
    assert cursor.batches_done == 4
    assert_states_equal(states, states_at(4))
    monkeypatch.undo()
    save_checkpoint(tmp_path, states=states_at(12), cursor=cursor_at(12))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rank0-cursor.json", "rank0-state-00000012.safetensors"]


@pytest.mark.parametrize("crash_on_call", [1, 2])  # 1: the state file's rename, 2: the cursor's
def test_crash_at_either_rename_resumes_from_previous(tmp_path, monkeypatch, crash_on_call):
    save_checkpoint(tmp_path, states=states_at(4), cursor=cursor_at(4))
    real_replace, calls = atomic.os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == crash_on_call:
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(Crash):
        save_checkpoint(tmp_path, states=states_at(8), cursor=cursor_at(8))
    states, cursor = load_checkpoint(tmp_path)
    assert cursor.batches_done == 4
    assert_states_equal(states, states_at(4))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(atomic.TEMP_SUFFIX)]


def test_ranks_keep_separate_files(tmp_path):
    save_checkpoint(tmp_path, states=states_at(2), cursor=cursor_at(2), rank=0)
    save_checkpoint(tmp_path, states=states_at(3), cursor=cursor_at(3), rank=1)
    save_checkpoint(tmp_path, states=states_at(5), cursor=cursor_at(5), rank=0)
    assert load_checkpoint(tmp_path, rank=1)[1].batches_done == 3
    assert load_checkpoint(tmp_path, rank=0)[1].batches_done == 5
    assert load_checkpoint(tmp_path, rank=2) is None
    assert (tmp_path / "rank1-state-00000003.safetensors").exists()


@pytest.mark.parametrize("changed", [("data",), ("model",), ("experiment", "processes")])
def test_fingerprint_mismatch_names_what_changed(tmp_path, changed):
    save_checkpoint(tmp_path, states=states_at(1), cursor=cursor_at(1, fingerprint=FINGERPRINT))
    now = {**FINGERPRINT, **{part: "other" for part in changed}}
    with pytest.raises(DiagnosticError) as excinfo:
        load_checkpoint(tmp_path, fingerprint=now)
    (diag,) = excinfo.value.diagnostics
    assert diag.span.path == str(tmp_path / cursor_name(0))
    assert diag.message.endswith(f"{', '.join(changed)} changed since it was written")


def test_a_cursor_without_a_fingerprint_of_parts_matches_nothing(tmp_path):
    save_checkpoint(tmp_path, states=states_at(1), cursor=cursor_at(1))
    with pytest.raises(DiagnosticError, match="experiment, data, model, processes changed"):
        load_checkpoint(tmp_path, fingerprint=FINGERPRINT)


def test_damaged_cursor_is_a_diagnostic_with_its_line(tmp_path):
    save_checkpoint(tmp_path, states=states_at(1), cursor=cursor_at(1))
    path = tmp_path / cursor_name(0)
    path.write_text('{\n  "format": "expc-checkpoint/1",\n  "batches_done": \n}\n')
    with pytest.raises(DiagnosticError) as excinfo:
        load_checkpoint(tmp_path)
    (diag,) = excinfo.value.diagnostics
    assert (diag.span.path, diag.span.line) == (str(path), 4)
    record = {"format": "expc-checkpoint/1", "state_file": "../x", "state_bytes": 1,
              "state_sha256": "0" * 64, "batches_done": 1, "samples_done": 1,
              "elapsed_seconds": 1}
    path.write_text(json.dumps(record))
    with pytest.raises(DiagnosticError, match="state_file must be `rank0-state-00000001"):
        load_checkpoint(tmp_path)
    del record["samples_done"]
    path.write_text(json.dumps(record))
    with pytest.raises(DiagnosticError, match="samples_done"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete", "layout"])
def test_damaged_state_file_is_a_diagnostic(tmp_path, damage):
    save_checkpoint(tmp_path, states=states_at(1), cursor=cursor_at(1))
    state = tmp_path / "rank0-state-00000001.safetensors"
    data = state.read_bytes()
    if damage == "truncate":
        state.write_bytes(data[: len(data) // 2])
    elif damage == "garble":
        state.write_bytes(b"\xff" * len(data))
    elif damage == "delete":
        state.unlink()
    else:  # same size, but the layout names a key the file does not hold
        assert b'\\"sum\\"' in data
        state.write_bytes(data.replace(b'\\"sum\\"', b'\\"mus\\"', 1))
    with pytest.raises(DiagnosticError) as excinfo:
        load_checkpoint(tmp_path)
    (diag,) = excinfo.value.diagnostics
    assert diag.span.path == str(state) and diag.code == "checkpoint-damaged"


def test_resumed_aggregation_equals_an_uninterrupted_one(tmp_path):
    torch.manual_seed(0)
    lengths = [3, 7, 2, 5, 5, 1, 6, 4, 2, 3, 7]
    data = TokenizedData(path="mem", token_ids=torch.randint(0, 50, (sum(lengths),)),
                         offsets=torch.cumsum(torch.tensor([0] + lengths), 0),
                         lines=torch.arange(1, len(lengths) + 1))
    plan = plan_batches(data.lengths, batch_size=2, bucket_batches=2)
    table = torch.randn(50, 8)

    def feed(aggregator, batches):
        for batch in batches:
            aggregator.add(table[batch.input_ids], attention_mask=batch.attention_mask)

    whole = PerSampleAggregator(reduction="mean")
    feed(whole, iter_batches(data, plan, pad_token_id=0))
    first = PerSampleAggregator(reduction="mean")
    feed(first, (b for b in iter_batches(data, plan, pad_token_id=0) if b.number < 3))
    save_checkpoint(tmp_path, states={"m": first.state_dict()},
                    cursor=Cursor(batches_done=3, samples_done=plan.samples_before(3),
                                  elapsed_seconds=0.0))
    states, cursor = load_checkpoint(tmp_path)
    resumed = PerSampleAggregator(reduction="mean")
    resumed.load_state_dict(states["m"])
    feed(resumed, iter_batches(data, plan, pad_token_id=0, start=cursor.batches_done))
    assert torch.equal(resumed.result()[""], whole.result()[""])


def test_temp_files_of_a_killed_write_are_cleared_by_the_next_checkpoint(tmp_path):
    save_checkpoint(tmp_path, states=states_at(1), cursor=cursor_at(1))
    torn = [tmp_path / ".rank0-state-00000002.safetensors.99-dead.tmp",
            tmp_path / ".rank0-cursor.json.99-dead.tmp"]
    other_rank = tmp_path / ".rank1-cursor.json.98-live.tmp"
    for path in (*torn, other_rank):
        path.write_bytes(b"torn")
    assert load_checkpoint(tmp_path)[1].batches_done == 1
    save_checkpoint(tmp_path, states=states_at(2), cursor=cursor_at(2))
    assert not any(path.exists() for path in torn)
    assert other_rank.exists()


def state_file(folder, step=1):
    return folder / f"rank0-state-{step:08d}.safetensors"


@pytest.mark.parametrize("damage", ["flip one bit", "same-size overwrite"])
def test_a_state_file_changed_after_it_was_written_is_refused(tmp_path, damage):
    # Issue 12 item 3: both were accepted by --resume and gave a complete run with wrong numbers.
    save_checkpoint(tmp_path, states=states_at(1), cursor=cursor_at(1))
    path = state_file(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip one bit":
        data[-3] ^= 0x01  # inside the last tensor's bytes: still a valid safetensors file
    else:
        save_checkpoint(tmp_path / "other", states=states_at(7), cursor=cursor_at(1))
        data = bytearray(state_file(tmp_path / "other").read_bytes())
        assert len(data) == path.stat().st_size
    path.write_bytes(bytes(data))
    with pytest.raises(DiagnosticError) as excinfo:
        load_checkpoint(tmp_path)
    (diag,) = excinfo.value.diagnostics
    assert diag.span.path == str(path) and diag.code == "checkpoint-damaged"
    assert "differs from the sha256" in diag.message


@pytest.mark.parametrize("field, value", [
    ("batches_done", -1), ("batches_done", True), ("batches_done", 1.0),
    ("samples_done", -4), ("state_bytes", "12"), ("elapsed_seconds", float("nan")),
    ("elapsed_seconds", -1.0), ("state_sha256", "xyz"), ("fingerprint", ["a"]),
    ("fingerprint", {"data": 1}),
])
def test_a_cursor_with_impossible_values_is_a_diagnostic(tmp_path, field, value):
    save_checkpoint(tmp_path, states=states_at(1), cursor=cursor_at(1))
    path = tmp_path / cursor_name(0)
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    with pytest.raises(DiagnosticError, match=f"impossible fields: {field}") as excinfo:
        load_checkpoint(tmp_path)
    assert excinfo.value.diagnostics[0].span.path == str(path)


def resumable(tmp_path, *, batches_done=3, samples_done=None):
    """A per-sample mean over 11 samples in batches of 2, checkpointed after 3 batches."""
    plan = plan_batches(torch.tensor([3, 7, 2, 5, 5, 1, 6, 4, 2, 3, 7]), batch_size=2)
    aggregator = PerSampleAggregator(reduction="mean")
    mask = torch.ones(plan.samples_before(3), 2, dtype=torch.bool)
    aggregator.add(torch.randn(plan.samples_before(3), 2, 4), attention_mask=mask)
    save_checkpoint(tmp_path, states={"m": aggregator.state_dict()}, cursor=Cursor(
        batches_done=batches_done, elapsed_seconds=0.0,
        samples_done=plan.samples_before(3) if samples_done is None else samples_done))
    return plan


def test_resume_states_loads_a_good_checkpoint(tmp_path):
    plan = resumable(tmp_path)
    fresh = PerSampleAggregator(reduction="mean")
    cursor = checkpoint.resume_states(tmp_path, rank=0, fingerprint=None, states={"m": fresh},
                                      batches=plan)
    assert cursor.batches_done == 3 and fresh.result()[""].shape == (6, 4)


@pytest.mark.parametrize("batches_done, samples_done", [(99, None), (3, 5)])
def test_a_cursor_that_does_not_fit_the_batch_plan_is_a_diagnostic(tmp_path, batches_done,
                                                                    samples_done):
    plan = resumable(tmp_path, batches_done=batches_done, samples_done=samples_done)
    with pytest.raises(DiagnosticError, match="impossible for this run") as excinfo:
        checkpoint.resume_states(tmp_path, rank=0, fingerprint=None,
                                 states={"m": PerSampleAggregator(reduction="mean")},
                                 batches=plan)
    assert excinfo.value.diagnostics[0].span.path == str(tmp_path / cursor_name(0))


class Picky:
    """A state whose load_state_dict rejects what it is given, as a wrong shape would."""

    def load_state_dict(self, state):
        raise RuntimeError("shape [6, 4] is not [6, 8]")


@pytest.mark.parametrize("states", [{"other": Picky()}, {"m": Picky()}])
def test_states_that_do_not_fit_the_run_are_a_diagnostic(tmp_path, states):
    plan = resumable(tmp_path)
    with pytest.raises(DiagnosticError) as excinfo:
        checkpoint.resume_states(tmp_path, rank=0, fingerprint=None, states=states,
                                 batches=plan)
    (diag,) = excinfo.value.diagnostics
    assert diag.span.path == str(state_file(tmp_path, 3)) and diag.code == "checkpoint-damaged"
