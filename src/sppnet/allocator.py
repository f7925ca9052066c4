"""The process's allocator policy: keep freed memory instead of returning it.

glibc's malloc serves every block above its mmap threshold (128 KiB, raised
dynamically up to 32 MiB) with a fresh ``mmap`` and gives it back with
``munmap`` when freed. sppnet's working tensors are larger than that: a
pooled window matrix is ~100 MB, a conv activation of a 688 x 917 image tens
of MB. Every such tensor then costs one page fault per 4 KiB page, paid again
on every mini-batch and every image: ~24,400 faults and ~40 ms per 100 MB on
the 2-core reference machine (issue 16 measured 84 s of kernel time in 204 s
of CPU for one `sppnet train classify` epoch).

``keep_freed_memory`` raises the mmap threshold and the trim threshold to
1 GiB, so large blocks come from the heap and freed ones stay there for the
next tensor of the same size (what jemalloc and tcmalloc do, and what
PyTorch's CPU performance guides recommend via ``MALLOC_*`` variables). The
cost: up to 1 GiB of freed memory may stay mapped in the process.

Importing ``sppnet`` applies it (the CLI, the library and spawned workers
alike), unless the environment sets ``SPPNET_SYSTEM_ALLOCATOR=1``. It is a
no-op on platforms without glibc's ``mallopt``.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory", "KEEP_BYTES"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

KEEP_BYTES = 1 << 30  # mallopt takes a C int: 1 GiB is well inside it

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the policy once per process; True when glibc accepted it."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("SPPNET_SYSTEM_ALLOCATOR", "") not in ("", "0"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The process's own symbols: libc is loaded already, and no ldconfig
        # subprocess runs at import (as ctypes.util.find_library would).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
    return _applied
