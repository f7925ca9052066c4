"""Training throughput with torch's LRN vs sppnet's (issue 16, item 6).

Training steps (forward, loss, backward, optimiser step) timed side by side in
one process, the two LRN variants interleaved on the same inputs and weights:

- classification: an SPP classifier (ZF-5) on a batch of random images, Adam,
  cross-entropy: the ``classify-tiny`` shape (width 0.25, 32 crops of 96) and
  the paper's (width 1.0, 16 crops of 224; the paper's batch is 128);
- Fast R-CNN: one iteration of ``detect-fast-rcnn-tiny``'s shape (width 0.25,
  2 images of 384 x 512, 64 RoIs each, conv2 and up trained, SGD).

SPP-net's and R-CNN's fc fine-tuning and the SVMs never run a conv layer, so
LRN does not touch them. Prints images/s (classification) and iterations/s
(Fast R-CNN) for each variant and the ratio.

Run: .venv/bin/python benchmarks/training_throughput.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from sppnet.models.backbones.zf5 import ZF5
from sppnet.models.classifier import SPPClassifier
from sppnet.models.detection.fast_rcnn import FastRCNN, FastRCNNHead, RoISampling, freeze_first_convs

sys.path.insert(0, str(Path(__file__).parent))
from lrn import with_lrn  # noqa: E402

VARIANTS = ("torch", "sppnet")


def classification_step(width: float, batch: int, size: int):
    torch.manual_seed(0)
    base = SPPClassifier(ZF5(width), 4, hidden=256 if width < 1 else 4096, dropout=0.3)
    images, labels = torch.rand(batch, 3, size, size), torch.randint(4, (batch,))
    steps = {}
    for variant in VARIANTS:
        model = SPPClassifier(with_lrn(base.trunk, variant), 4, hidden=base.fc7[0].out_features, dropout=0.3)
        model.load_state_dict(base.state_dict())
        steps[variant] = classifier_step(model, images, labels)
    return steps


def classifier_step(model: SPPClassifier, images: torch.Tensor, labels: torch.Tensor):
    """One training step of ``model`` (cross-entropy, Adam) as a callable."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def fast_rcnn_train_step(model: FastRCNN, optimizer: torch.optim.Optimizer, images, proposals, targets,
                         seed: int = 0) -> None:
    """One Fast R-CNN training step: the multi-task loss, backward, SGD."""
    losses = model.losses(images, proposals, targets, torch.Generator().manual_seed(seed))
    optimizer.zero_grad()
    (losses["loss_classifier"] + losses["loss_box_reg"]).backward()
    optimizer.step()


def fast_rcnn_step():
    torch.manual_seed(0)
    base = SPPClassifier(ZF5(0.25), 4, levels=(6,), hidden=256, dropout=0.5)
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 384, 512, generator=generator) for _ in range(2)]
    gt = torch.tensor([[40.0, 50.0, 200.0, 220.0], [250.0, 100.0, 400.0, 300.0]])
    corners = torch.rand(300, 2, generator=generator) * 380
    proposals = torch.cat([corners, corners + 20 + torch.rand(300, 2, generator=generator) * 200], 1)
    proposals = torch.cat([gt.repeat(20, 1) + torch.randn(40, 4, generator=generator) * 8, proposals])
    targets = [{"boxes": gt, "labels": torch.tensor([1, 3])}] * 2
    steps = {}
    for variant in VARIANTS:
        classifier = SPPClassifier(with_lrn(base.trunk, variant), 4, levels=(6,), hidden=256, dropout=0.5)
        classifier.load_state_dict(base.state_dict())
        model = FastRCNN(classifier.trunk, FastRCNNHead(classifier.fc6, classifier.fc7, 4), (6,), scales=(384,),
                         max_side=None, window_target=96.0, sampling=RoISampling(rois_per_image=64)).train()
        freeze_first_convs(model.trunk, 1)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

        steps[variant] = lambda model=model, optimizer=optimizer: fast_rcnn_train_step(
            model, optimizer, images, [proposals, proposals], targets)
    return steps


def timed(steps: dict, repeat: int) -> dict[str, float]:
    for step in steps.values():  # warm-up
        step()
    times = {variant: [] for variant in steps}
    for _ in range(repeat):
        for variant, step in steps.items():
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
    return {variant: statistics.median(values) for variant, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeat} steps")
    for name, steps, unit, per_step in (
        ("classify-tiny shape (ZF-5 x0.25, 32 x 96^2)", classification_step(0.25, 32, 96), "images/s", 32),
        ("paper shape (ZF-5 x1.0, 16 x 224^2)", classification_step(1.0, 16, 224), "images/s", 16),
        ("Fast R-CNN tiny (ZF-5 x0.25, 2 x 384x512, 128 RoIs)", fast_rcnn_step(), "iterations/s", 1),
    ):
        seconds = timed(steps, args.repeat)
        rates = {variant: per_step / seconds[variant] for variant in VARIANTS}
        print(f"{name}: torch LRN {rates['torch']:.1f} {unit}, sppnet LRN {rates['sppnet']:.1f} {unit}, "
              f"{rates['sppnet'] / rates['torch']:.2f}x")


if __name__ == "__main__":
    main()
