"""Why bf16 training steps are sometimes not finite (session 25): oneDNN's AMX
kernel for a convolution's weight gradient reads memory it did not write.

Fast R-CNN's bf16 runs met NaN gradients from a finite loss (7 times in
~68,000 iterations, sessions 23-25), in conv2's weight where it was looked
at (``trunk.features.4``: 24 input channels at width 0.25), and the same
step taken again in a fresh process came out finite most of the time (17
of 100 tries NaN from the same weights and images; 0 of 100 with
``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``). This
script makes it without a detector: the weight gradient of conv2's shape
(bf16, channels-last, finite random inputs) after memory freed by torch was
filled with NaN. Finite results are bit-identical from try to try, so the
unwritten memory seems to be multiplied by zero (padding lanes): only a NaN
or inf left there shows. On CPUs without AMX every count is 0.

Run: .venv/bin/python benchmarks/results/bf16-nan-amx-2026-12-06.py [--tries 200]
     ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 .venv/bin/python benchmarks/results/bf16-nan-amx-2026-12-06.py
"""

from __future__ import annotations

import argparse
import os

import torch


def weight_gradient(channels_in: int, generator: torch.Generator):
    """A step closure: conv2's weight gradient (5 x 5, stride 2, 64 outputs) on a 159 x 192 map."""
    cl = torch.channels_last
    x = torch.rand(1, channels_in, 159, 192, generator=generator).to(torch.bfloat16).contiguous(memory_format=cl)
    grad = (torch.randn(1, 64, 78, 94, generator=generator) * 1e-3).to(torch.bfloat16).contiguous(memory_format=cl)
    weight = (torch.randn(64, channels_in, 5, 5, generator=generator) * 0.05).to(torch.bfloat16).contiguous(memory_format=cl)

    def step() -> torch.Tensor:
        return torch.ops.aten.convolution_backward(grad, x, weight, [64], [2, 2], [0, 0], [1, 1], False, [0, 0], 1,
                                                   [False, True, False])[1]
    return step


def poison() -> None:
    """Fill, then free, blocks of the sizes oneDNN's scratch memory is drawn from."""
    for size in (1 << 16, 1 << 18, 1 << 20, 1 << 22):
        for dtype in (torch.bfloat16, torch.float32):
            junk = torch.full((size,), float("nan"), dtype=dtype)
            del junk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=200)
    args = parser.parse_args()
    print(f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(default)')}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    for channels_in in (24, 32, 64):
        step = weight_gradient(channels_in, torch.Generator().manual_seed(0))
        reference = step()
        bad = differ = 0
        for _ in range(args.tries):
            poison()
            result = step()
            if not bool(torch.isfinite(result).all()):
                bad += 1
            elif not torch.equal(result, reference):
                differ += 1
        print(f"{channels_in} input channels: {bad} of {args.tries} weight gradients not finite, "
              f"{differ} finite ones unlike the first")


if __name__ == "__main__":
    main()
