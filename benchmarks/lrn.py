"""Local Response Normalisation: torch's layer vs sppnet's kernels, side by side.

Part 1, the ZF-5 trunk (width 1.0) on one 3 x 688 x 917 image, inference, in
fp32 (NCHW) and on the bf16 fast path (bfloat16 autocast, channels-last
weights and input, as ``sppnet.fast_path`` sets it up), with three LRN
variants in the same network: (a) ``torch.nn.LocalResponseNorm``, (b)
``sppnet.ops.LocalResponseNorm``, (c) identity (no LRN: the floor any LRN
costs on top of). Prints the median seconds and the ratios b/c (what our LRN
still costs) and a/b (speed-up of the trunk).

Part 2, the LRN layer alone, forward and forward + backward, on the two maps
ZF-5 normalises at that size (96 x 342 x 457 after conv1, 256 x 85 x 113
after conv2): fp32 NCHW, and bf16 channels-last (torch's layer runs under
bf16 autocast there, which is the only way it takes bfloat16 on CPU: it
computes, and returns, float32).

All variants run interleaved in one process on the same inputs, under
sppnet's allocator policy as any user's process (``sppnet.allocator``: fresh
pages cost 20-150 ms per 100 MB on these VMs, which would swamp the layer);
``--system-allocator`` re-runs with ``SPPNET_SYSTEM_ALLOCATOR=1`` (glibc's defaults).

Run: .venv/bin/python benchmarks/lrn.py [--repeat 7] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
from torch import nn

from sppnet.fast_path import as_input, autocast, prepare
from sppnet.models.backbones.zf5 import ZF5
from sppnet.ops.lrn import LocalResponseNorm

_SYSTEM_ALLOCATOR = {"SPPNET_SYSTEM_ALLOCATOR": "1"}  # read when sppnet is imported: re-exec to apply
VARIANTS = ("torch", "sppnet", "identity")


def with_lrn(trunk: nn.Module, variant: str) -> nn.Module:
    """A copy of ``trunk`` whose LRN layers are torch's, ours or identities."""
    trunk = copy.deepcopy(trunk)
    for i, layer in enumerate(trunk.features):
        if isinstance(layer, nn.LocalResponseNorm):
            hyper = (layer.size, layer.alpha, layer.beta, layer.k)
            trunk.features[i] = {"torch": lambda: nn.LocalResponseNorm(*hyper),
                                 "sppnet": lambda: LocalResponseNorm(*hyper),
                                 "identity": nn.Identity}[variant]()
    return trunk


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_times(fns: dict, repeat: int) -> dict:
    """Median seconds of each callable, run interleaved (a warm-up round first)."""
    times = {name: [] for name in fns}
    for round_ in range(repeat + 1):
        for name, fn in fns.items():
            t = seconds(fn)
            if round_:
                times[name].append(t)
    return {name: statistics.median(values) for name, values in times.items()}


def trunk_part(args) -> None:
    torch.manual_seed(0)
    base = ZF5(1.0).eval()
    image = torch.randn(1, 3, args.height, args.width)
    print(f"ZF-5 trunk (width 1.0), one 3x{args.height}x{args.width} image, inference, median of {args.repeat}")
    print(f"{'precision':10s}{'torch LRN (a)':>15s}{'sppnet LRN (b)':>16s}{'identity (c)':>14s}{'b/c':>7s}{'a/b':>7s}"
          f"{'max|b-a|/max|a|':>17s}")
    for precision in ("fp32", "bf16"):
        nets = {v: prepare(with_lrn(base, v), precision) for v in VARIANTS}
        x = as_input(image, precision)

        def run(net):
            with torch.no_grad(), autocast(precision):
                return net(x)

        med = median_times({v: (lambda net=nets[v]: run(net)) for v in VARIANTS}, args.repeat)
        theirs, ours = run(nets["torch"]).float(), run(nets["sppnet"]).float()
        diff = ((ours - theirs).abs().max() / theirs.abs().max()).item()
        a, b, c = (med[v] for v in VARIANTS)
        print(f"{precision:10s}{a:14.4f}s{b:15.4f}s{c:13.4f}s{b / c:7.2f}{a / b:7.2f}{diff:17.2e}")


def layer_part(args) -> None:
    torch.manual_seed(0)
    theirs, ours = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0), LocalResponseNorm(5, 1e-4, 0.75, 1.0)
    conv1 = (96, (args.height - 5) // 2, (args.width - 5) // 2)  # conv1 7x7/2 pad 1
    conv2 = (256, 85, 113)
    print(f"\nLRN layer alone (size 5), median of {args.repeat}; torch's bf16 runs under bf16 autocast "
          "(it returns float32)")
    print(f"{'map':18s}{'precision':10s}{'fwd torch':>11s}{'fwd ours':>10s}{'speed-up':>9s}"
          f"{'fwd+bwd torch':>15s}{'fwd+bwd ours':>14s}{'speed-up':>9s}")
    for c, h, w in (conv1, conv2):
        activation = torch.relu(torch.randn(1, c, h, w) * 3)
        for precision in ("fp32", "bf16"):
            x = as_input(activation, precision).to(torch.bfloat16 if precision == "bf16" else torch.float32)
            grad = torch.randn_like(x)
            xg = x.clone().requires_grad_()

            def forward(layer):
                with torch.no_grad(), autocast(precision):
                    layer(x)

            def forward_backward(layer):
                xg.grad = None
                with autocast(precision):
                    out = layer(xg)
                out.backward(grad.to(out.dtype))

            med = median_times({
                "fwd_theirs": lambda: forward(theirs), "fwd_ours": lambda: forward(ours),
                "fb_theirs": lambda: forward_backward(theirs), "fb_ours": lambda: forward_backward(ours),
            }, args.repeat)
            print(f"{f'{c}x{h}x{w}':18s}{precision:10s}{med['fwd_theirs'] * 1e3:9.1f}ms{med['fwd_ours'] * 1e3:8.1f}ms"
                  f"{med['fwd_theirs'] / med['fwd_ours']:8.1f}x{med['fb_theirs'] * 1e3:13.1f}ms"
                  f"{med['fb_ours'] * 1e3:12.1f}ms{med['fb_theirs'] / med['fb_ours']:8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=688)
    parser.add_argument("--width", type=int, default=917)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: all)")
    parser.add_argument("--skip-layer", action="store_true", help="time the trunks only")
    parser.add_argument("--system-allocator", action="store_true", help="keep glibc's default allocator settings")
    args = parser.parse_args()
    if args.system_allocator and os.environ.get("SPPNET_SYSTEM_ALLOCATOR") != "1":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_SYSTEM_ALLOCATOR})
    if args.threads is not None:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    allocator = "glibc defaults" if args.system_allocator else "sppnet's policy: freed memory kept in process"
    print(f"{torch.get_num_threads()} threads, allocator: {allocator}")
    trunk_part(args)
    if not args.skip_layer:
        layer_part(args)


if __name__ == "__main__":
    main()
