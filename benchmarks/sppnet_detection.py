"""SPP-net detection ablation on generated data: scales, box regression, model
combination, and seconds per image per stage.

1. Generates a classification set and a VOC-layout detection set (seed 0) and
   trains the conv layers as a classifier (preset classify-tiny), as the
   paper pre-trains on ImageNet.
2. Trains SPP-net detectors on that trunk (preset detect-sppnet-tiny):
   one scale (256), three scales (192, 384, 640), and a second three-scale
   model with another fine-tuning seed for model combination.
3. Prints VOC07 mAP on the test split without/with box regression, the
   combined models' mAP, and seconds per image of each stage.

Run: .venv/bin/python benchmarks/sppnet_detection.py [--train 60] [--test 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sppnet.config import load_config
from sppnet.data.datasets import open_detection_dataset
from sppnet.data.synthetic import DetectionSynthConfig, synthesize_classification, synthesize_detection
from sppnet.engine.classification import ClassifyConfig, train_classifier
from sppnet.engine.detection_stages import dataset_proposals, detect_dataset
from sppnet.engine.sppnet_detection import SPPNetConfig, train_sppnet
from sppnet.evaluation.voc import evaluate_detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--test", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize_classification(tmp / "cls", train=1000, test=50, seed=0)
        started = time.perf_counter()
        # from scratch, as this benchmark was measured (no generic stage)
        train_classifier(load_config(ClassifyConfig, "classify-tiny", ["train.val_split=null", "pretrain.generic_images=0"]), tmp / "cls",
                         tmp / "backbone", progress=False, log=lambda m: None)
        print(f"trunk pre-trained as a classifier in {time.perf_counter() - started:.0f} s", flush=True)
        data = tmp / "det"
        synthesize_detection(data, DetectionSynthConfig(train=args.train, test=args.test, seed=0))
        train, test = open_detection_dataset(data, "train"), open_detection_dataset(data, "test")
        variants = {
            "1 scale (256)": ["scales=[256]", "train_scales=null"],
            "3 scales (192, 384, 640)": ["scales=[192,384,640]", "train_scales=null"],
            "3 scales, fine-tuning seed 1": ["scales=[192,384,640]", "train_scales=null", "finetune.seed=1"],
        }
        base = load_config(SPPNetConfig, "detect-sppnet-tiny")
        started = time.perf_counter()
        dataset_proposals(train, base.proposal_config, data, lambda m: None)
        dataset_proposals(test, base.proposal_config, data, lambda m: None)
        proposal_seconds = (time.perf_counter() - started) / (len(train) + len(test))
        detectors, rows, stage_rows = {}, [], []
        for name, overrides in variants.items():
            config = load_config(SPPNetConfig, "detect-sppnet-tiny", overrides)
            stages = []
            started = time.perf_counter()
            detector = train_sppnet(config, train, data, tmp / name.replace(" ", "_"), backbone=tmp / "backbone",
                                    log=lambda m: stages.append((time.perf_counter(), m)))
            train_seconds = time.perf_counter() - started
            detectors[name] = detector
            maps = {}
            for regression in (False, True):
                per_class, seconds = detect_dataset([detector], test, data, log=lambda m: None, box_regression=regression)
                maps[regression] = evaluate_detections(per_class, test, "voc07").map
            rows.append((name, maps[False], maps[True], train_seconds / len(train), seconds))
            stage_rows.append((name, {k: v / len(train) for k, v in detector.stage_seconds.items()}))
            print(f"{name}: mAP {100 * maps[False]:.1f} / {100 * maps[True]:.1f} with box regression; "
                  f"training {train_seconds:.0f} s", flush=True)
        combined, seconds = detect_dataset(list(detectors.values())[1:], test, data, log=lambda m: None)
        combined_map = evaluate_detections(combined, test, "voc07").map
        print(f"\nVOC07 mAP (%) on {len(test)} generated test images, {len(train)} training images")
        print(f"{'model':34s}{'mAP':>7s}{'+bbox':>7s}{'train s/img':>13s}{'test s/img':>12s}")
        for name, plain, regressed, train_s, test_s in rows:
            print(f"{name:34s}{100 * plain:7.1f}{100 * regressed:7.1f}{train_s:13.2f}{test_s:12.3f}")
        print(f"{'3 scales x 2 models, combined':34s}{'':7s}{100 * combined_map:7.1f}{'':13s}{seconds:12.3f}")
        print(f"selective search (fast, native size): {proposal_seconds:.2f} s/image")
        print("\ntraining seconds per image by stage (proposals were cached before):")
        for name, stages in stage_rows:
            print(f"  {name}: " + ", ".join(f"{stage} {value:.3f}" for stage, value in stages.items()))


if __name__ == "__main__":
    main()
