"""Whether `expc run` may write into a folder, and which of its files are expc's to remove.

The rule that keeps a user's files safe: expc removes or overwrites only files an expc
manifest in the folder claims (its `files`, `spec/run_format.py`). So
- a folder without a readable expc manifest is used only when it is empty (its writer lock
  file and temporary files of expc's own names do not count), with or without `--force`;
- a folder holding another spec's run needs `--force`, and `--resume` needs the same
  experiment (the canonical IR's digest, `runtime/fingerprint.py`: comments and `expc fmt`
  do not make another spec);
- where one of expc's outputs would replace something that is not expc's (a symlink, a
  folder or file where expc writes the other kind, a file the manifest does not claim), the
  run is refused even with `--force`, naming it.
Everything is checked before anything is written or removed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from pathlib import Path

from expc.runtime.atomic import is_temp_of, os_errors_named, remove_stale_temps
from expc.runtime.run_lock import LOCK_FILE
from expc.spec.diagnostics import DiagnosticError, fail
from expc.spec.run_format import (CHECKPOINT_DIR, MANIFEST, OUTPUT_FILES, PARTIAL_PATTERN,
                                  claimed_files, read_manifest)

log = logging.getLogger(__name__)

_TOP_NAMES = (MANIFEST, *(name for name in OUTPUT_FILES if "/" not in name))
_CHECKPOINT_PATTERNS = tuple(name.split("/", 1)[1] for name in OUTPUT_FILES
                             if name.startswith(f"{CHECKPOINT_DIR}/"))
_LISTED = 5  # foreign entries named in a refusal


def _refuse(path: Path, message: str, *, code: str = "run-folder", help: str) -> DiagnosticError:
    return fail(path, message, code=code, help=[help])


def _is_expc_temp(name: str, patterns: tuple[str, ...]) -> bool:
    return any(is_temp_of(name, pattern) for pattern in patterns)


def _require_empty(run_dir: Path) -> None:
    """Refuse a folder with no expc manifest that holds anything but our lock and temps."""
    if not run_dir.is_dir():
        return
    foreign = sorted(entry.name for entry in run_dir.iterdir()
                     if entry.name != LOCK_FILE and not _is_expc_temp(entry.name, _TOP_NAMES))
    if foreign:
        shown = ", ".join(f"`{name}`" for name in foreign[:_LISTED])
        more = f" and {len(foreign) - _LISTED} more" if len(foreign) > _LISTED else ""
        raise _refuse(run_dir, f"`{run_dir}` is not an expc run folder (it has no {MANIFEST}) "
                      f"and is not empty: it holds {shown}{more}; expc writes only into an "
                      "empty folder or its own run folder, even with --force",
                      help="choose a new or empty output dir")


def _previous_manifest(run_dir: Path) -> dict | None:
    """The folder's expc manifest, None if it has none; refuse one that is not readable."""
    path = run_dir / MANIFEST
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if path.is_symlink() or not path.is_file():
            raise fail(path, f"{MANIFEST} is not a plain file", code="run-folder")
        return read_manifest(path)
    except DiagnosticError as exc:
        raise _refuse(path, f"`{run_dir}` holds a {MANIFEST} that is not a readable expc run "
                      f"manifest ({exc}); expc will not write over it, even with --force",
                      help="if it is an old expc run, delete it yourself, or choose another "
                      "output dir") from None


def _same_spec(previous: dict, *, ir_sha: str, spec_sha: str) -> bool:
    """Same experiment: by IR digest; by spec text for a manifest from before the digest."""
    spec = previous.get("spec", {})
    if "ir_sha256" in spec:
        return spec["ir_sha256"] == ir_sha
    return spec.get("sha256") == spec_sha


def _check_spec(run_dir: Path, previous: dict, *, ir_sha: str, spec_sha: str, force: bool,
                resume: bool) -> bool:
    """Whether to resume `previous`; raise if its folder must not be used for this spec."""
    if _same_spec(previous, ir_sha=ir_sha, spec_sha=spec_sha):
        return resume
    spec = previous.get("spec", {})
    other = (f"`{spec.get('path')}`, experiment sha256 "
             f"{str(spec.get('ir_sha256') or spec.get('sha256'))[:12]}")
    path = run_dir / MANIFEST
    if resume:
        raise _refuse(path, f"cannot resume: `{run_dir}` holds a run of another spec ({other})",
                      code="run-folder-other-spec",
                      help="run without --resume (and with --force) to start over")
    if not force:
        raise _refuse(path, f"`{run_dir}` holds a run of another spec ({other})",
                      code="run-folder-other-spec",
                      help="pass --force to replace it, or choose another output dir")
    return False


def _kind_problem(path: Path, *, folder: bool) -> str | None:
    if path.is_symlink():
        return "is a symlink"
    if path.exists() and path.is_dir() != folder:
        return "is a folder" if not folder else "is not a folder"
    return None


def _check_outputs(run_dir: Path, claimed: tuple[str, ...]) -> None:
    """Refuse where an output of expc would replace something that is not expc's."""
    for name in _TOP_NAMES:
        path = run_dir / name
        problem = _kind_problem(path, folder=False)
        if problem is None and path.exists() and name != MANIFEST and name not in claimed:
            problem = "is not claimed by the folder's manifest"
        if problem:
            raise _refuse(path, f"`{path}` {problem}; expc would overwrite it, so it will not "
                          "run there, even with --force", help="move it away or choose "
                          "another output dir")
    checkpoint = run_dir / CHECKPOINT_DIR
    problem = _kind_problem(checkpoint, folder=True)
    if problem:
        raise _refuse(checkpoint, f"`{checkpoint}` {problem}; expc keeps its checkpoints "
                      "there, so it will not run there, even with --force",
                      help="move it away or choose another output dir")
    for entry in _checkpoint_files(checkpoint, _CHECKPOINT_PATTERNS):
        if entry.is_symlink() or not entry.is_file() or not _claims(claimed, entry.name):
            raise _refuse(entry, f"`{entry}` has the name of an expc checkpoint file but is "
                          "not one the folder's manifest claims; expc will not run there, "
                          "even with --force", help="move it away or choose another "
                          "output dir")


def _claims(claimed: tuple[str, ...], checkpoint_name: str) -> bool:
    return any(fnmatch.fnmatchcase(f"{CHECKPOINT_DIR}/{checkpoint_name}", pattern)
               for pattern in claimed)


def _checkpoint_files(checkpoint: Path, patterns: tuple[str, ...]) -> list[Path]:
    if not checkpoint.is_dir() or checkpoint.is_symlink():
        return []
    return sorted(entry for entry in checkpoint.iterdir()
                  if any(fnmatch.fnmatchcase(entry.name, p) for p in patterns))


def claim_folder(run_dir: Path, *, ir_sha: str, spec_sha: str, force: bool, resume: bool
                 ) -> tuple[dict | None, tuple[str, ...]]:
    """Check `run_dir` for a run (see the module docstring): the previous run's manifest
    when it is to be resumed (else None), and the output files its manifest claims."""
    if run_dir.exists() and not run_dir.is_dir():
        raise _refuse(run_dir, f"output dir `{run_dir}` is a file",
                      help="choose a folder for the output dir")
    with os_errors_named(run_dir, doing="read"):
        previous = _previous_manifest(run_dir)
        if previous is None:
            if resume:
                log.info("nothing to resume in %s: starting from the beginning", run_dir)
            _require_empty(run_dir)
            return None, ()
        resuming = _check_spec(run_dir, previous, ir_sha=ir_sha, spec_sha=spec_sha,
                               force=force, resume=resume)
        claimed = claimed_files(previous)
        _check_outputs(run_dir, claimed)
    return (previous if resuming else None), claimed


def _remove(path: Path) -> None:
    with os_errors_named(path, doing="remove"):
        path.unlink(missing_ok=True)


def clear_own_files(run_dir: Path, claimed: tuple[str, ...], *, keep_checkpoint: bool) -> None:
    """Remove the previous run's outputs that its manifest claims (its checkpoint files too
    unless resuming from them) and the temporary files crashed writes of expc's names left."""
    remove_stale_temps(run_dir, accept=lambda name: _is_expc_temp(name, _TOP_NAMES))
    for name in claimed:  # a pattern (shards) removes each file it matches
        if "/" not in name and not (keep_checkpoint and name == PARTIAL_PATTERN):
            for path in run_dir.glob(name):  # a resumed run's shards belong to its checkpoint
                _remove(path)
    checkpoint = run_dir / CHECKPOINT_DIR
    if not checkpoint.is_dir():
        return
    remove_stale_temps(checkpoint, accept=lambda name: _is_expc_temp(name, _CHECKPOINT_PATTERNS))
    if keep_checkpoint:
        return
    for entry in _checkpoint_files(checkpoint, _CHECKPOINT_PATTERNS):
        if _claims(claimed, entry.name):
            _remove(entry)
    with contextlib.suppress(OSError):  # only an empty folder goes: a user's files stay
        checkpoint.rmdir()
