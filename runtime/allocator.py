"""Keep freed activation memory in the process instead of returning it to the OS each batch.

torch.fx's generated forward frees every intermediate as soon as it is dead; with glibc's
default dynamic mmap threshold those large blocks go back to the kernel and page-fault in
again on the next batch. The compiler benchmark measured the stripped graph at 1.02-1.04x the
plain model with the default allocator and 0.99x with a fixed mmap threshold and no trimming,
and the plain forward itself ~18% faster (see the issue notes). This is process-wide;
`runtime/process.py` applies it for `expc run` and `expc.run()`; it does nothing off glibc.

The flip side shows at the finish, where every per-sample state is turned into its result
tensor: the states' many small per-batch rows are freed into the heap and kept there, so the
process would hold the results twice. `release_freed_memory` (glibc's `malloc_trim`) hands
those free pages back between keys; the runtime benchmark's `mean` run held 1.7x its
results' size above a run of a tenth the data without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # blocks above this still come from mmap
TRIM_THRESHOLD = 2**31 - 1  # effectively: never give the heap's top back


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has `mallopt` and `malloc_trim`), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds; False when the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc allocator thresholds set: %s", ok)
    return ok


def release_freed_memory() -> bool:
    """Return the heap's free pages to the OS now; False when the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)  # 1 if pages went back, 0 if there were none: both fine
    return True
