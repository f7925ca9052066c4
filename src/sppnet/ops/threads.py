"""One thread count for torch and for sppnet's numba kernels.

numba's OpenMP threading layer sets the calling thread's OpenMP thread count
to numba's pool size (by default, every core) when it starts its pool, and
torch reads the same setting. So the first LRN or pooling call used to change
``torch.get_num_threads()`` behind the user's back: a process pinned to one
thread ran its convolutions on all cores from then on, and trained a
different model, since torch's reductions sum in an order that depends on
the thread count. Every parallel kernel runs inside
:func:`torch_thread_count_kept`: numba uses torch's thread count, and torch's
is put back if numba changed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import torch

__all__ = ["torch_thread_count_kept"]


@contextmanager
def torch_thread_count_kept() -> Iterator[None]:
    """Run numba's parallel kernels with torch's thread count (at most
    numba's pool size); torch's count is the same afterwards."""
    threads = torch.get_num_threads()
    wanted = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        if numba.get_num_threads() != wanted:
            numba.set_num_threads(wanted)
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
