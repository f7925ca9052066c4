"""Fast R-CNN's OHEM step: every labelled RoI pooled inside the autograd graph
(session 22-24's code) against pooled outside it and only the chosen RoIs
pooled again with gradients (session 25), side by side in one process, and
the papers' sampling (no OHEM: 64 RoIs per image drawn, 25% foreground) beside them.

detect-fast-rcnn-tiny's step shape (ZF-5 x 0.25, 2 images of 375 x 500, ~500
proposals each, 64 RoIs per image trained on, NMS 0.7, bg_low 0), bf16
autocast where the CPU has it, at each training scale; the median of
``--repeat`` interleaved steps. The two must train the same RoIs: the
script checks their losses agree before timing.

Run: .venv/bin/python benchmarks/results/ohem-pooling-2026-12-06.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sppnet.fast_path import autocast, training_precision
from sppnet.models.classifier import SPPClassifier
from sppnet.models.backbones.zf5 import ZF5
from sppnet.models.detection.fast_rcnn import FastRCNN, FastRCNNHead, RoISampling, fast_rcnn_loss, freeze_first_convs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training_precision import SCALES, _inputs  # noqa: E402
from training_throughput import fast_rcnn_train_step, timed  # noqa: E402


class AllRoIsInTheGraph(FastRCNN):
    """Session 24's OHEM: every labelled RoI pooled with gradients, the chosen rows indexed out."""

    def losses(self, images, proposals, targets, generator=None):
        features, boxes, labels, box_targets = self.sampled_rois(images, proposals, targets, generator)
        pooled = self.pool(features, boxes)
        kept = self._hardest_rois(pooled.detach(), boxes, labels, box_targets)
        offsets = torch.tensor([0] + [len(image_boxes) for image_boxes in boxes[:-1]]).cumsum(0)
        hardest = torch.cat([rows + offset for rows, offset in zip(kept, offsets)])
        class_logits, box_deltas = self.head(pooled[hardest])
        loss_classifier, loss_box = fast_rcnn_loss(class_logits.float(), box_deltas.float(), labels[hardest],
                                                   box_targets[hardest].float(), self.box_weight)
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box}


def steps_at(scale: int, precision: str) -> dict:
    torch.manual_seed(0)
    base = SPPClassifier(ZF5(0.25), 4, levels=(6,), hidden=256, dropout=0.3)
    images, proposals, targets = _inputs()
    mining = RoISampling(rois_per_image=64, bg_low=0.0, hard_mining_nms=0.7)
    steps, first_losses = {}, {}
    for name, kind, sampling in (("every RoI in the graph", AllRoIsInTheGraph, mining),
                                 ("chosen RoIs pooled again", FastRCNN, mining),
                                 ("no OHEM", FastRCNN, RoISampling(rois_per_image=64))):
        classifier = SPPClassifier(ZF5(0.25), 4, levels=(6,), hidden=256, dropout=0.0)
        classifier.load_state_dict(base.state_dict())
        torch.manual_seed(1)  # the same new output layers (cls_score, bbox_pred) in both
        model = kind(classifier.trunk, FastRCNNHead(classifier.fc6, classifier.fc7, 4), (6,), scales=(scale,),
                     max_side=2000, window_target=160.0, sampling=sampling).train()
        freeze_first_convs(model.trunk, 1)
        model.set_precision(precision)
        with autocast(precision):
            losses = model.losses(images, proposals, targets, torch.Generator().manual_seed(0))
        first_losses[name] = torch.stack([losses["loss_classifier"], losses["loss_box_reg"]]).detach()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

        def step(model=model, optimizer=optimizer):
            with autocast(precision):
                fast_rcnn_train_step(model, optimizer, images, proposals, targets)

        steps[name] = step
    a, b, _ = first_losses.values()
    assert torch.allclose(a, b, rtol=1e-5), f"the two OHEM steps disagree: {a} vs {b}"
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    precision = training_precision("bf16")
    print(f"precision: {precision}")
    print("| train scale | every RoI in the graph, s/step | chosen RoIs pooled again, s/step | ratio | "
          "the papers' sampling (no OHEM), s/step |")
    print("|---|---|---|---|---|")
    for scale in SCALES:
        seconds = timed(steps_at(scale, precision), args.repeat)
        old, new, papers = seconds.values()
        print(f"| {scale} | {old:.4f} | {new:.4f} | {old / new:.2f}x | {papers:.4f} |")


if __name__ == "__main__":
    main()
