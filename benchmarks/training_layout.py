"""Training steps with NCHW vs channels-last activations, and with oneDNN's
default kernel cache vs sppnet's (issue 14, session 15).

1. Layout, side by side in one process (interleaved, median of ``--repeat``
   steps, the same weights and inputs): the paper trunks make their
   activations channels-last (``PaperTrunk.forward``); the NCHW variant runs
   the same layers on an NCHW input (``trunk.features`` directly).
   - a ``classify-crops-tiny`` step: SPP classifier, ZF-5 x 0.25, 32 crops of
     96, Adam;
   - a ``detect-fast-rcnn-tiny`` step: 2 images of 384 x 512, 64 RoIs each,
     conv2 and up trained, SGD.
2. Kernel cache, one fresh process per capacity (oneDNN reads
   ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` once): ``--shapes`` Fast R-CNN steps
   on pairs of images of random sizes at random train scales, cycled twice
   as a detection set's images come round again; the second cycle is timed. oneDNN's default keeps 1024
   kernels; sppnet asks for 65,536 (``sppnet.kernel_cache``).

Run: .venv/bin/python benchmarks/training_layout.py [--repeat 9] [--shapes 150]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sppnet.models.backbones.zf5 import ZF5
from sppnet.models.classifier import SPPClassifier
from sppnet.models.detection.fast_rcnn import FastRCNN, FastRCNNHead, RoISampling, freeze_first_convs

sys.path.insert(0, str(Path(__file__).parent))
from training_throughput import classifier_step, fast_rcnn_train_step, timed  # noqa: E402

LAYOUTS = ("NCHW", "channels-last")


class _NCHWTrunk(nn.Module):
    """The same layers on NCHW activations (PaperTrunk.forward makes them channels-last)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.geometry, self.out_channels = trunk.geometry, trunk.out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk.features(images.contiguous())


def _trunk(trunk: nn.Module, layout: str) -> nn.Module:
    return _NCHWTrunk(trunk) if layout == "NCHW" else trunk


def classification_steps() -> dict:
    torch.manual_seed(0)
    base = SPPClassifier(ZF5(0.25), 4, hidden=256, dropout=0.3)
    images, labels = torch.rand(32, 3, 96, 96), torch.randint(4, (32,))
    steps = {}
    for layout in LAYOUTS:
        model = SPPClassifier(ZF5(0.25), 4, hidden=256, dropout=0.3)
        model.load_state_dict(base.state_dict())
        model.trunk = _trunk(model.trunk, layout)
        steps[layout] = classifier_step(model, images, labels)
    return steps


def fast_rcnn_model(layout: str, state: dict | None = None,
                    train_scales: tuple[int, ...] | None = None) -> tuple[FastRCNN, torch.optim.Optimizer]:
    torch.manual_seed(0)
    classifier = SPPClassifier(ZF5(0.25), 4, levels=(6,), hidden=256, dropout=0.5)
    if state is not None:
        classifier.load_state_dict(state)
    model = FastRCNN(_trunk(classifier.trunk, layout), FastRCNNHead(classifier.fc6, classifier.fc7, 4), (6,),
                     scales=(384,), max_side=None, train_scales=train_scales, window_target=96.0,
                     sampling=RoISampling(rois_per_image=64)).train()
    freeze_first_convs(classifier.trunk, 1)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    return model, optimizer


def fast_rcnn_inputs(height: int, width: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, height, width, generator=generator) for _ in range(2)]
    gt = torch.tensor([[0.1, 0.1, 0.5, 0.45], [0.55, 0.25, 0.95, 0.8]]) * torch.tensor([width, height] * 2)
    corners = torch.rand(300, 2, generator=generator) * torch.tensor([width, height]) * 0.7
    proposals = torch.cat([corners, corners + 20 + torch.rand(300, 2, generator=generator) * 150], 1)
    proposals = torch.cat([gt.repeat(20, 1) + torch.randn(40, 4, generator=generator) * 8, proposals])
    targets = [{"boxes": gt, "labels": torch.tensor([1, 3])}] * 2
    return images, [proposals, proposals], targets


def fast_rcnn_steps() -> dict:
    state = SPPClassifier(ZF5(0.25), 4, levels=(6,), hidden=256, dropout=0.5).state_dict()
    images, proposals, targets = fast_rcnn_inputs(384, 512)
    steps = {}
    for layout in LAYOUTS:
        model, optimizer = fast_rcnn_model(layout, state)

        steps[layout] = lambda model=model, optimizer=optimizer: fast_rcnn_train_step(
            model, optimizer, images, proposals, targets)
    return steps


def cycle_of_shapes(steps: int) -> float:
    """Seconds of the second pass over ``steps`` training steps (this process's
    kernel cache). As in the in-context stage of the tiny presets: two images
    of 220-419 pixels a side per step, each resized to a train scale (192,
    384 or 640) and padded to the larger of the two."""
    model, optimizer = fast_rcnn_model("channels-last", train_scales=(192, 384, 640))
    generator = torch.Generator().manual_seed(0)
    sides = torch.randint(220, 420, (steps, 2, 2), generator=generator).tolist()
    inputs = []
    for i, ((h1, w1), (h2, w2)) in enumerate(sides):
        images, proposals, targets = fast_rcnn_inputs(min(h1, h2), min(w1, w2), seed=i)
        images = [torch.rand(3, h, w, generator=generator) for h, w in ((h1, w1), (h2, w2))]
        inputs.append((images, proposals, targets))
    seconds = 0.0
    for cycle in range(2):
        start = time.perf_counter()
        for i, (images, proposals, targets) in enumerate(inputs):
            fast_rcnn_train_step(model, optimizer, images, proposals, targets, seed=i)
        seconds = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--shapes", type=int, default=150)
    parser.add_argument("--cycle-only", type=int, default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.cycle_only is not None:
        print(cycle_of_shapes(args.cycle_only))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"1. layout, median of {args.repeat} steps, interleaved")
    for name, steps in (("classify-crops-tiny step (32 x 96^2)", classification_steps()),
                        ("Fast R-CNN tiny step (2 x 384x512, 128 RoIs)", fast_rcnn_steps())):
        seconds = timed(steps, args.repeat)
        print(f"  {name}: NCHW {1e3 * seconds['NCHW']:.1f} ms, channels-last {1e3 * seconds['channels-last']:.1f} ms, "
              f"{seconds['NCHW'] / seconds['channels-last']:.2f}x")
    print(f"2. kernel cache: second pass over {args.shapes} steps of two images of random sizes, one process per capacity")
    results = {}
    for capacity in ("1024", "65536", "1024", "65536"):  # alternating: the machine's load drifts
        env = dict(os.environ, ONEDNN_PRIMITIVE_CACHE_CAPACITY=capacity)
        out = subprocess.run([sys.executable, __file__, "--cycle-only", str(args.shapes)], env=env, check=True,
                             capture_output=True, text=True).stdout
        results.setdefault(capacity, []).append(float(out.split()[-1]))
    best = {capacity: min(values) for capacity, values in results.items()}
    print(f"  oneDNN's default (1024 kernels): {best['1024']:.1f} s; sppnet's (65,536): {best['65536']:.1f} s; "
          f"{best['1024'] / best['65536']:.2f}x (best of 2 each)")


if __name__ == "__main__":
    main()
