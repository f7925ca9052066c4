"""Real faults for tests: nothing here mocks our own code."""

import contextlib
import signal

import pytest


@contextlib.contextmanager
def file_size_limit(size):
    """A real per-process file size limit (ulimit -f): a write past ``size``
    bytes fails with EFBIG (SIGXFSZ ignored, else it would kill the process)."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
