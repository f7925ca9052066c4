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

Each kernel is built twice, multi-threaded and serial (:func:`cached_kernel`),
and numba's on-disk cache must keep the two apart. Where that count is 1
(:func:`kernel_threads`), the serial build runs: the same sums in the same
order, without waking numba's pool, and a one-thread process (a test worker)
never compiles the multi-threaded builds, the slow ones to compile (2-6 s
each against 1-2.5 s).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numba
import torch

__all__ = ["cached_kernel", "kernel_threads", "torch_thread_count_kept"]


def kernel_threads() -> int:
    """The threads a parallel kernel runs on: torch's count, at most numba's pool size."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@contextmanager
def torch_thread_count_kept() -> Iterator[None]:
    """Run numba's parallel kernels with torch's thread count (at most
    numba's pool size); torch's count is the same afterwards."""
    threads = torch.get_num_threads()
    wanted = kernel_threads()
    try:
        if numba.get_num_threads() != wanted:
            numba.set_num_threads(wanted)
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def cached_kernel(function: Callable, parallel: bool, **options) -> Callable:
    """``numba.njit(parallel=parallel, cache=True, **options)`` of a copy of
    ``function`` named ``<name>_parallel`` or ``<name>_serial``.

    numba files a function's cached machine code under its qualified name and
    line and keys it by signature and CPU, not by compile options. The serial
    and the multi-threaded build of one function shared one cache entry, so
    whichever was compiled first ran for both: the "parallel" LRN and
    pooling kernels ran on one core (benchmarks/results/numba-builds-2026-12-06.sh:
    pooling 1800 windows 12.2 ms on 1 thread and 12.3-12.5 ms on 2; built
    apart 4.7-6.4 ms on 2). Under its own name each build gets its own cache
    file."""
    name = f"{function.__name__}_{'parallel' if parallel else 'serial'}"
    copy = types.FunctionType(function.__code__, function.__globals__, name, function.__defaults__,
                              function.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = function.__doc__
    return numba.njit(parallel=parallel, cache=True, **options)(copy)
