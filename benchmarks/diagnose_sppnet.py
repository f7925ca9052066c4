"""Why SPP-net detects poorly on generated data: one trained run, scored
several ways, with Hoiem et al.'s error analysis of each.

    python benchmarks/diagnose_sppnet.py OUT [--train 60] [--test 30] [--seed 0]
        [--backbone RUN] [--set KEY=VALUE ...]

Generates a detection set in OUT/data (``synthesize_detection``), trains the
``detect-sppnet-tiny`` preset in OUT/run (resumable), then evaluates on the
test split (VOC07 mAP):

- the per-class SVMs, with and without box regression (the method);
- the fine-tuned fc8 softmax instead of the SVMs (Fast R-CNN's finding);
- SVMs retrained at C = 0.01 and 0.1 (the paper's C = 0.001 assumes
  thousands of positives per class), and at the solver tolerance 1e-3
  instead of the default 0.1;

and prints the false-positive breakdown (Loc / Sim / Oth / BG) and AP by
object size for the SVM and softmax scorers, and the SVM score quantiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from sppnet.config import load_config
from sppnet.data.datasets import open_detection_dataset
from sppnet.data.synthetic import DetectionSynthConfig, synthesize_detection
from sppnet.engine.detection_stages import dataset_proposals, label_dataset, train_svms
from sppnet.engine.sppnet_detection import SPPNetConfig, train_sppnet
from sppnet.evaluation.diagnosis import diagnose_detections
from sppnet.evaluation.voc import Detections, evaluate_detections
from sppnet.ops import class_nms, clip_boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    data = args.out / "data"
    if not (data / "ImageSets").is_dir():
        synthesize_detection(data, DetectionSynthConfig(train=args.train, test=args.test, seed=args.seed))
    train, test = open_detection_dataset(data, "train"), open_detection_dataset(data, "test")
    config = load_config(SPPNetConfig, "detect-sppnet-tiny", args.set + [f"finetune.seed={args.seed}"])
    started = time.perf_counter()
    detector = train_sppnet(config, train, data, args.out / "run", backbone=args.backbone, resume=True, log=print)
    print(f"trained in {time.perf_counter() - started:.0f} s")

    proposals = dataset_proposals(test, config.proposal_config, data, lambda m: None)
    windows = {}
    for record in test.images:
        boxes = proposals[record.image_id].float()
        windows[record.image_id] = (boxes, *detector.window_features(record, boxes))

    def evaluate(scorer, name: str, regression: bool = True) -> tuple[dict, float]:
        lists = {c: ([], [], []) for c in range(1, test.num_classes)}
        for record in test.images:
            boxes, pooled, fc7 = windows[record.image_id]
            kept, labels, out_boxes, scores = class_nms(boxes, scorer(fc7), 0.3, 100)
            if regression:
                out_boxes = detector.model.regressors.apply(pooled[kept], out_boxes, labels)
            out_boxes = clip_boxes(out_boxes, (record.height, record.width))
            for c in range(1, test.num_classes):
                chosen = labels == c
                lists[c][0].extend([record.image_id] * int(chosen.sum()))
                lists[c][1].append(scores[chosen])
                lists[c][2].append(out_boxes[chosen])
        per_class = {c: Detections(i, torch.cat(s), torch.cat(b)) for c, (i, s, b) in lists.items()}
        value = evaluate_detections(per_class, test, "voc07").map
        print(f"== {name}: VOC07 mAP {100 * value:.1f}")
        return per_class, value

    results = {}
    svm = lambda fc7: detector.model.svms.decision_function(fc7 * detector.model.svm_scale)  # noqa: E731
    softmax = lambda fc7: torch.softmax(detector.model.head.fc8(fc7), 1)[:, 1:]  # noqa: E731
    per_class, results["svm+bbox"] = evaluate(svm, "SVMs + box regression")
    _, results["svm"] = evaluate(svm, "SVMs", regression=False)
    print(diagnose_detections(per_class, test).table())
    per_class, results["softmax+bbox"] = evaluate(softmax, "fc8 softmax + box regression")
    print(diagnose_detections(per_class, test).table())
    scores = torch.cat([svm(fc7) for _, _, fc7 in windows.values()]).flatten()
    quantiles = torch.quantile(scores[:200_000], torch.tensor([0.01, 0.5, 0.99, 0.999])).tolist()
    print("SVM score quantiles 1/50/99/99.9%:", [round(q, 3) for q in quantiles], "max", round(scores.max().item(), 3))
    train_windows = label_dataset(train, dataset_proposals(train, config.proposal_config, data, lambda m: None))
    for c, tol in ((config.svm.C, 1e-3), (0.01, config.svm.tol), (0.1, config.svm.tol)):
        svms, scale = train_svms(detector.window_features, train.images, train_windows,
                                 dataclasses.replace(config.svm, C=c, tol=tol), config.mining, train.num_classes,
                                 log=lambda m: None)
        name = f"SVMs at C = {c}, tol = {tol}"
        _, results[name] = evaluate(lambda fc7: svms.decision_function(fc7 * scale), name)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
