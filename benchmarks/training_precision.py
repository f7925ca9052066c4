"""Fast R-CNN and R-CNN training steps in float32 vs bfloat16 autocast (issue 14, sessions 23-24).

``detect-fast-rcnn-tiny``'s step (ZF-5 x 0.25, 2 images, 64 RoIs each,
conv2 and up trained, SGD) at each of its training scales, the two precisions
side by side in one process: interleaved, the same weights and inputs, the
median of ``--repeat`` steps. ``bf16`` is ``train.precision: bf16``: the
model's ``set_precision("bf16")`` (channels-last weights) and the step under
``sppnet.fast_path.autocast``; weights, gradients and losses stay float32.
The weights are random (timing only): how the two precisions' losses agree
on a trained trunk is tests/engine/test_fast_rcnn.py's subject.

R-CNN: one step of ``detect-rcnn-tiny``'s fine-tuning (128 windows warped to
96 x 96, the whole network trained, SGD), ``finetune.precision`` fp32 vs bf16
as the window fine-tuning runs it (contiguous weights and windows) vs bf16
with channels-last weights and windows (Fast R-CNN's layout; not used there:
session 24 measured no gain from it at these sizes).

Run: .venv/bin/python benchmarks/training_precision.py [--repeat 15] [--only fast-rcnn|rcnn]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sppnet.fast_path import as_input, autocast, prepare
from sppnet.models.backbones.zf5 import ZF5
from sppnet.models.classifier import SPPClassifier
from sppnet.models.detection.fast_rcnn import FastRCNN, FastRCNNHead, RoISampling, freeze_first_convs
from sppnet.models.detection.rcnn import RCNNNetwork

sys.path.insert(0, str(Path(__file__).parent))
from training_throughput import fast_rcnn_train_step, timed  # noqa: E402

PRECISIONS = ("fp32", "bf16")
SCALES = (192, 384, 640)  # detect-fast-rcnn-tiny's train_scales


def _inputs():
    """Two 375 x 500 images (the held-out sets' typical size), 500 proposals each
    around and away from two objects."""
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 375, 500, generator=generator) for _ in range(2)]
    gt = torch.tensor([[40.0, 50.0, 200.0, 220.0], [250.0, 100.0, 400.0, 300.0]])
    corners = torch.rand(460, 2, generator=generator) * 360
    proposals = torch.cat([corners, corners + 12 + torch.rand(460, 2, generator=generator) * 200], 1)
    proposals = torch.cat([gt.repeat(20, 1) + torch.randn(40, 4, generator=generator) * 8, proposals])
    proposals[:, 2:] = proposals[:, 2:].clamp(max=499)
    return images, [proposals, proposals], [{"boxes": gt, "labels": torch.tensor([1, 3])}] * 2


def steps_at(scale: int) -> dict:
    """One training step per precision at ``scale``."""
    torch.manual_seed(0)
    base = SPPClassifier(ZF5(0.25), 4, levels=(6,), hidden=256, dropout=0.3)
    images, proposals, targets = _inputs()
    steps = {}
    for precision in PRECISIONS:
        classifier = SPPClassifier(ZF5(0.25), 4, levels=(6,), hidden=256, dropout=0.3)
        classifier.load_state_dict(base.state_dict())
        model = FastRCNN(classifier.trunk, FastRCNNHead(classifier.fc6, classifier.fc7, 4), (6,), scales=(scale,),
                         max_side=2000, window_target=160.0, sampling=RoISampling(rois_per_image=64)).train()
        freeze_first_convs(model.trunk, 1)
        model.set_precision(precision)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        def step(model=model, optimizer=optimizer, precision=precision):
            with autocast(precision):
                fast_rcnn_train_step(model, optimizer, images, proposals, targets)

        steps[precision] = step
    return steps


def rcnn_steps() -> dict:
    """One R-CNN fine-tuning step per variant: fp32, bf16, bf16 channels-last."""
    torch.manual_seed(0)
    base = RCNNNetwork(SPPClassifier(ZF5(0.25), 4, levels=(6, 3, 2, 1), hidden=256, dropout=0.3), 5)
    generator = torch.Generator().manual_seed(1)
    windows = torch.rand(128, 3, 96, 96, generator=generator)
    labels = torch.randint(0, 5, (128,), generator=generator)
    steps = {}
    for variant, precision in (("fp32", "fp32"), ("bf16", "bf16"), ("bf16 channels-last", "bf16")):
        network = RCNNNetwork(SPPClassifier(ZF5(0.25), 4, levels=(6, 3, 2, 1), hidden=256, dropout=0.3), 5)
        network.load_state_dict(base.state_dict())
        network.train()
        if variant == "bf16 channels-last":
            prepare(network, precision)
        optimizer = torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.9)

        def step(network=network, optimizer=optimizer, precision=precision, layout=variant == "bf16 channels-last"):
            with autocast(precision):
                logits = network(as_input(windows, precision) if layout else windows)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        steps[variant] = step
    return steps


def fast_rcnn_table(repeat: int) -> None:
    print("| train scale | fp32 s/step | bf16 s/step | fp32 / bf16 |")
    print("|---|---|---|---|")
    totals = {precision: 0.0 for precision in PRECISIONS}
    for scale in SCALES:
        steps = steps_at(scale)
        seconds = timed(steps, repeat)
        for precision in PRECISIONS:
            totals[precision] += seconds[precision] / len(SCALES)
        print(f"| {scale} | {seconds['fp32']:.4f} | {seconds['bf16']:.4f} | {seconds['fp32'] / seconds['bf16']:.2f}x |")
    print(f"| mean over the scales | {totals['fp32']:.4f} | {totals['bf16']:.4f} | "
          f"**{totals['fp32'] / totals['bf16']:.2f}x** |")


def rcnn_table(repeat: int) -> None:
    seconds = timed(rcnn_steps(), repeat)
    print("\n| R-CNN fine-tuning step (128 windows, 96 x 96) | s/step | fp32 / it |")
    print("|---|---|---|")
    for variant, value in seconds.items():
        print(f"| {variant} | {value:.4f} | {seconds['fp32'] / value:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--only", choices=("fast-rcnn", "rcnn"), help="time one detector's step only")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeat} steps")
    if args.only != "rcnn":
        fast_rcnn_table(args.repeat)
    if args.only != "fast-rcnn":
        rcnn_table(args.repeat)


if __name__ == "__main__":
    main()
