"""How much bfloat16 can buy on the convs: the ZF-5 trunk layer by layer.

Issue 16 asked for bf16 >= 3x fp32 end to end for R-CNN, whose time is the
trunk on 2000 warped windows. This script times the trunk's layers on one
R-CNN batch (64 windows of 224 x 224) in three settings, interleaved in one
process: fp32 in NCHW (sppnet's exact path), fp32 in channels-last, and
bf16 autocast in channels-last (sppnet's fast path). It prints each layer's
median time and the ratios, and the CPU's bf16 instructions.

Run: .venv/bin/python benchmarks/trunk_precision.py [--batch 64] [--size 224] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sppnet.models.backbones.registry import build_backbone

SETTINGS = {
    "fp32 NCHW": (torch.contiguous_format, False),
    "fp32 channels-last": (torch.channels_last, False),
    "bf16 channels-last": (torch.channels_last, True),
}


def cpu_flags() -> str:
    try:
        flags = open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return "unknown"
    wanted = [f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f", "avx512_vnni"))]
    return " ".join(sorted(set(wanted))) or "none of amx/avx512"


def layer_seconds(layers, images, memory_format, bf16) -> list[float]:
    seconds = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        x = images.contiguous(memory_format=memory_format)
        for layer in layers:
            start = time.perf_counter()
            x = layer(x)
            seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    trunk = build_backbone("zf5").eval()
    layers = list(trunk.features)
    images = torch.randn(args.batch, 3, args.size, args.size)
    times = {name: [] for name in SETTINGS}
    for repeat in range(args.repeat + 1):  # round 0 warms up
        for name, (memory_format, bf16) in SETTINGS.items():
            trunk.to(memory_format=memory_format)
            seconds = layer_seconds(layers, images, memory_format, bf16)
            if repeat:
                times[name].append(seconds)
    median = {name: [statistics.median(run[i] for run in runs) for i in range(len(layers))]
              for name, runs in times.items()}
    print(f"ZF-5 trunk, {args.batch} x 3 x {args.size} x {args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeat}; CPU flags: {cpu_flags()}")
    names = list(SETTINGS)
    print(f"{'layer':28s}" + "".join(f"{n:>22s}" for n in names) + f"{'bf16 / fp32 CL':>16s}")
    for i, layer in enumerate(layers):
        row = "".join(f"{median[n][i] * 1000:19.1f} ms" for n in names)
        ratio = median[names[1]][i] / max(median[names[2]][i], 1e-9)
        print(f"{i:2d} {type(layer).__name__:25s}{row}{ratio:15.2f}x")
    totals = {n: sum(median[n]) for n in names}
    print(f"{'total':28s}" + "".join(f"{totals[n] * 1000:19.1f} ms" for n in names))
    print(f"bf16 channels-last over fp32 NCHW: {totals[names[0]] / totals[names[2]]:.2f}x; "
          f"over fp32 channels-last: {totals[names[1]] / totals[names[2]]:.2f}x; "
          f"fp32 channels-last over fp32 NCHW: {totals[names[0]] / totals[names[1]]:.2f}x")


if __name__ == "__main__":
    main()
