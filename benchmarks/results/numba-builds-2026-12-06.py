"""The numba kernels on 1 and 2 threads (session 28): LRN forward + backward on
a conv1-sized map and roi_spp's forward on 1800 windows of a conv5 map; and
roi_spp's serial and parallel forward on 10 and 40 windows (where it turns
parallel).

    PYTHONPATH=SRC python benchmarks/results/numba-builds-2026-12-06.py

Run it on two source trees (before and after the serial and parallel builds
got their own cache entries, a9aeb30) to see whether the "parallel" builds use
the second thread; benchmarks/results/numba-builds-2026-12-06.sh runs both.
Median of 5 rounds of 5 calls each, after a warm-up call (which compiles on
the first run of a tree).
"""

import statistics
import time

import torch

from sppnet.ops import local_response_norm, roi_spp


def timed(step, rounds: int = 5, calls: int = 5) -> float:
    step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            step()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    cases = {}
    for dtype, layout in ((torch.bfloat16, torch.channels_last), (torch.float32, torch.contiguous_format)):
        x = torch.randn(2, 96, 120, 160, generator=generator).to(dtype).contiguous(memory_format=layout)
        x.requires_grad_()
        grad = torch.ones(x.shape, dtype=dtype).contiguous(memory_format=layout)

        def lrn(x=x, grad=grad):
            local_response_norm(x, 5, 1e-4, 0.75, 2.0).backward(grad)

        name = "channels-last" if layout is torch.channels_last else "NCHW"
        cases[f"LRN fwd+bwd, 2x96x120x160, {str(dtype).split('.')[1]} {name}"] = lrn
    features = torch.randn(1, 64, 40, 53, generator=generator)
    count = 1800
    x0 = torch.randint(0, 43, (count,), generator=generator)
    y0 = torch.randint(0, 30, (count,), generator=generator)
    x1 = (x0 + torch.randint(4, 16, (count,), generator=generator)).clamp(max=52)
    y1 = (y0 + torch.randint(4, 16, (count,), generator=generator)).clamp(max=39)
    rois = torch.stack([torch.zeros(count, dtype=torch.long), x0, y0, x1, y1], 1)
    cases["roi_spp forward, 1800 windows of 64x40x53, levels 6/3/2/1"] = lambda: roi_spp(features, rois, (6, 3, 2, 1))
    before = torch.get_num_threads()
    # Where roi_spp's forward should turn parallel (its _PARALLEL_MIN_OUTPUTS): the
    # serial and the parallel build on 2 threads, a few windows at a time.
    import importlib

    module = importlib.import_module("sppnet.ops.roi_spp")
    threshold = module._PARALLEL_MIN_OUTPUTS
    torch.set_num_threads(2)
    for windows in (10, 40):
        figures = []
        for forced in (2**62, 0):  # serial, parallel
            module._PARALLEL_MIN_OUTPUTS = forced
            figures.append(timed(lambda: roi_spp(features, rois[:windows], (6, 3, 2, 1)), calls=50))
        print(f"roi_spp forward, {windows} windows, 2 threads: serial {figures[0]:.2f} ms, parallel {figures[1]:.2f} ms")
    module._PARALLEL_MIN_OUTPUTS = threshold
    torch.set_num_threads(before)
    for name, step in cases.items():
        figures = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            figures.append(timed(step))
        torch.set_num_threads(before)
        print(f"{name}: {figures[0]:.1f} ms on 1 thread, {figures[1]:.1f} ms on 2 ({figures[0] / figures[1]:.2f}x)")


if __name__ == "__main__":
    main()
