"""Process-wide settings a run wants, applied by `expc run` and `expc.run()` alike.

Call `apply_run_settings()` before torch is imported: libgomp reads `OMP_WAIT_POLICY` once,
when it starts. With the default policy idle OpenMP workers spin; on a shared 2-core machine
that made runs 3.5x (hidden 512) to 25x (quickstart) slower (issue 5 note), so unless the
user chose a policy, idle workers sleep. The allocator thresholds
(`allocator.keep_freed_memory`) may be set at any time. This module imports no torch.
"""

from __future__ import annotations

import os

from expc.runtime.allocator import keep_freed_memory

OMP_WAIT_POLICY = "PASSIVE"


def apply_run_settings() -> None:
    """Idle OpenMP workers sleep (unless `OMP_WAIT_POLICY` is already set); glibc keeps freed
    activation memory in the process."""
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    keep_freed_memory()
