"""The allocator tweak `expc run` applies is accepted by this machine's glibc."""

import subprocess
import sys


def test_keep_freed_memory_is_accepted_by_glibc():
    # In a child process: the setting is process-wide and must not leak into other tests.
    code = ("from expc.runtime.allocator import keep_freed_memory; "
            "import sys; sys.exit(0 if keep_freed_memory() else 3)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
