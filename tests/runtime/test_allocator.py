"""The allocator tweak `expc run` applies is accepted by this machine's glibc."""

import subprocess
import sys


def test_keep_freed_memory_is_accepted_by_glibc():
    # In a child process: the setting is process-wide and must not leak into other tests.
    code = ("from expc.runtime.allocator import keep_freed_memory; "
            "import sys; sys.exit(0 if keep_freed_memory() else 3)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_release_freed_memory_gives_back_a_freed_heap_block():
    # In a child process: RSS after freeing a block that lives in the heap (below the mmap
    # threshold `expc run` sets) drops only once the free pages are released.
    code = """
import sys, torch
from expc.runtime.allocator import keep_freed_memory, release_freed_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

assert keep_freed_memory()
blocks = [torch.ones(256 * 1024) for _ in range(64)]  # 64 x 1 MiB, inside the heap
held = rss_mib()
del blocks
kept = rss_mib()
assert release_freed_memory()
released = rss_mib()
sys.exit(0 if kept > held - 16 and released < kept - 48 else 3)
"""
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
