"""Seconds per named stage, for the detectors' time breakdowns (conv,
pooling, fc, classifier, NMS) in ``sppnet bench detect``."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

__all__ = ["StageTimer", "stage"]


class StageTimer:
    """Accumulates wall-clock seconds per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def reset(self) -> None:
        self.seconds.clear()


@contextmanager
def _untimed():
    yield


def stage(timer: StageTimer | None, name: str):
    """``with stage(timer, "conv"):`` times the block when ``timer`` is set."""
    return timer(name) if timer is not None else _untimed()
