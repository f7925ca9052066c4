"""Pooling fused into fc6 (issue 16, item 4) vs pooling every window first.

One ZF-5 conv5 map of the paper's single scale (256 x 43 x 57, a 688 x 917
image), 2000 random windows, levels 6/3/2/1 (12,800 values per window) and a
full-width fc6 (12,800 -> 4096). Side by side in one process, alternating:

- unfused: ``roi_spp`` of all 2000 windows (a 102 MB float32 matrix), then fc6;
- fused: ``pooled_fc6``, windows pooled and multiplied by fc6 ``block`` at a
  time (only ``block`` pooled rows alive at once);

in float32 and under bfloat16 autocast (the CPU fast path). Prints the median
of ``--repeats`` calls, the ratio, the largest difference and the pooled
bytes alive at once.

Run: .venv/bin/python benchmarks/fused_fc6.py [--windows 2000] [--blocks 128,256,512] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from sppnet.fast_path import autocast
from sppnet.models.windows import WindowPooler, pooled_fc6
from sppnet.ops import roi_spp

LEVELS = (6, 3, 2, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--blocks", default="128,256,512")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    features = torch.relu(torch.randn(1, 256, 43, 57))
    x0, y0 = torch.randint(0, 50, (args.windows,)), torch.randint(0, 36, (args.windows,))
    w, h = torch.randint(0, 20, (args.windows,)), torch.randint(0, 20, (args.windows,))
    rois = torch.stack([torch.zeros_like(x0), x0, y0, (x0 + w).clamp(max=56), (y0 + h).clamp(max=42)], 1)
    fc6 = nn.Sequential(nn.Linear(256 * sum(n * n for n in LEVELS), 4096), nn.ReLU()).eval()
    pooler = WindowPooler([features], torch.zeros(args.windows, dtype=torch.long), rois, LEVELS)
    blocks = [int(b) for b in args.blocks.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.windows} windows, "
          f"pooled width {pooler.width}, fc6 {pooler.width} -> 4096")
    for precision in ("fp32", "bf16"):
        runs = {"unfused": lambda: fc6(roi_spp(features, rois, LEVELS))}
        for block in blocks:
            runs[f"fused, block {block}"] = lambda block=block: pooled_fc6(pooler, fc6, block=block)
        times = {name: [] for name in runs}
        outputs = {}
        with torch.no_grad(), autocast(precision):
            for name, run in runs.items():  # warm-up
                outputs[name] = run().float()
            for _ in range(args.repeats):
                for name, run in runs.items():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["unfused"])
        for name in runs:
            median = statistics.median(times[name])
            block = args.windows if name == "unfused" else int(name.split()[-1])
            alive = min(block, args.windows) * pooler.width * features.element_size() / 2**20  # roi_spp pools in the map's dtype
            diff = (outputs[name] - outputs["unfused"]).abs().max().item()
            print(f"{precision}  {name:<18} {1000 * median:7.1f} ms  {base / median:5.2f}x unfused  "
                  f"pooled alive {alive:6.1f} MiB  max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
