"""roi_spp vs a torchvision roi_pool loop over the pyramid levels, side by side.

The SPP-net detection workload: levels (6, 3, 2, 1), 2000 random windows on a
256 x 43 x 57 map (ZF-5 conv5 of an image scaled to 688). Both run in this one
process, interleaved, on the same inputs; the script prints the median forward
and backward times of each, their ratio, and whether outputs and gradients
agree.

Allocator: each call returns ~100 MB (2000 x 12,800 floats; torchvision's loop
allocates twice that). On these VMs memory freshly mapped from the kernel
costs 20-150 ms per 100 MB in page faults, which would swamp both kernels.
By default the script runs as any user's process does: importing sppnet
applies its allocator policy (``sppnet.allocator``: glibc keeps freed memory
in the process), no environment variable needed. Both implementations run
under the same setting; ``--system-allocator`` re-runs the script with
``SPPNET_SYSTEM_ALLOCATOR=1``, i.e. glibc's defaults.

Run: .venv/bin/python benchmarks/pooling.py [--rois 2000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torchvision.ops import roi_pool

from sppnet.ops import roi_spp

_SYSTEM_ALLOCATOR = {"SPPNET_SYSTEM_ALLOCATOR": "1"}  # read when sppnet is imported: re-exec to apply


def torchvision_pyramid(features, rois, levels):
    return torch.cat([roi_pool(features, rois, (n, n), 1.0).flatten(1) for n in levels], dim=1)


def random_windows(count, height, width, generator):
    """(count, 5) integer cell boxes with uniformly random corners in one image."""
    x = torch.randint(0, width, (count, 2), generator=generator).sort(1).values
    y = torch.randint(0, height, (count, 2), generator=generator).sort(1).values
    return torch.stack([torch.zeros(count, dtype=torch.long), x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def forward_seconds(pool, features, rois, levels):
    with torch.no_grad():
        start = time.perf_counter()
        out = pool(features, rois, levels)
        return time.perf_counter() - start, out


def backward_seconds(pool, features, rois, levels, grad_seed):
    features.grad = None
    out = pool(features, rois, levels)
    start = time.perf_counter()
    out.backward(grad_seed)
    return time.perf_counter() - start, features.grad.clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--height", type=int, default=43)
    parser.add_argument("--width", type=int, default=57)
    parser.add_argument("--levels", type=lambda s: tuple(int(v) for v in s.split(",")), default=(6, 3, 2, 1))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--system-allocator", action="store_true", help="keep glibc's default allocator settings")
    args = parser.parse_args()
    if args.system_allocator and os.environ.get("SPPNET_SYSTEM_ALLOCATOR") != "1":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_SYSTEM_ALLOCATOR})

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, args.channels, args.height, args.width, generator=generator).requires_grad_()
    rois = random_windows(args.rois, args.height, args.width, generator)
    rois_float = rois.float()
    grad_seed = torch.randn(args.rois, args.channels * sum(n * n for n in args.levels), generator=generator)

    ours = (roi_spp, rois)
    theirs = (torchvision_pyramid, rois_float)
    times = {name: [] for name in ("fw_ours", "fw_theirs", "bw_ours", "bw_theirs")}
    for repeat in range(args.repeat + 1):  # the first round warms up (numba loads its cache)
        fw_ours, out_ours = forward_seconds(*ours[:1], features, ours[1], args.levels)
        fw_theirs, out_theirs = forward_seconds(*theirs[:1], features, theirs[1], args.levels)
        bw_ours, grad_ours = backward_seconds(ours[0], features, ours[1], args.levels, grad_seed)
        bw_theirs, grad_theirs = backward_seconds(theirs[0], features, theirs[1], args.levels, grad_seed)
        if repeat:
            for name, value in zip(times, (fw_ours, fw_theirs, bw_ours, bw_theirs)):
                times[name].append(value)
    med = {name: statistics.median(values) for name, values in times.items()}

    allocator = "glibc defaults" if args.system_allocator else "sppnet's policy: freed memory kept in process"
    print(f"map {args.channels}x{args.height}x{args.width}, {args.rois} windows, levels {args.levels}, "
          f"{torch.get_num_threads()} threads, allocator: {allocator}, median of {args.repeat}")
    print(f"{'':10s}{'roi_spp (s)':>14s}{'torchvision loop (s)':>22s}{'speed-up':>10s}")
    print(f"{'forward':10s}{med['fw_ours']:14.4f}{med['fw_theirs']:22.4f}{med['fw_theirs'] / med['fw_ours']:9.1f}x")
    print(f"{'backward':10s}{med['bw_ours']:14.4f}{med['bw_theirs']:22.4f}{med['bw_theirs'] / med['bw_ours']:9.1f}x")
    grad_diff = (grad_ours - grad_theirs).abs().max().item()
    print(f"outputs identical: {torch.equal(out_ours, out_theirs)}; gradients: max abs difference {grad_diff:.2e} "
          "(same argmax cells; float sums accumulate in another order)")


if __name__ == "__main__":
    main()
