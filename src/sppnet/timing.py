"""Seconds per named stage, for the detectors' time breakdowns (conv,
pooling, fc, classifier, NMS) in ``sppnet bench detect``; the FLOPs of the
work a block of code runs, and the machine's measured matrix-product peak,
to turn those seconds into achieved GFLOP/s and a fraction of that peak."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["StageTimer", "stage", "FlopCounter", "matmul_peak_gflops"]


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


class FlopCounter:
    """``with FlopCounter() as counter:`` counts in ``counter.flops`` the
    FLOPs of every ``nn.Conv2d`` and ``nn.Linear`` that runs in the block,
    at the shapes it runs at, 2 per multiply-add: a conv
    ``2 * Cin * Cout * kh * kw * Hout * Wout / groups`` per image, a linear
    layer ``2 * in * out`` per row. Biases, activations, pooling and matrix
    products outside these modules (SVM scores) are not counted: they are a
    small part of the work and not matrix-bound."""

    def __init__(self) -> None:
        self.flops = 0
        self._handle = None

    def __enter__(self) -> FlopCounter:
        # A global hook sees every module, whichever detector object holds it.
        self._handle = nn.modules.module.register_module_forward_hook(self._count)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _count(self, module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Conv2d):
            # weight (Cout, Cin / groups, kh, kw); output (N, Cout, Hout, Wout)
            self.flops += 2 * output.numel() * module.weight[0].numel()
        elif isinstance(module, nn.Linear):
            self.flops += 2 * output.numel() * module.in_features


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5) -> float:
    """The best GFLOP/s of ``repeats`` ``size`` x ``size`` x ``size``
    ``torch.mm`` calls in ``dtype`` (after one untimed call): what this
    machine's matrix products reach, the yardstick for achieved GFLOP/s."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9
