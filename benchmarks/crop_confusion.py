"""How well a crop classifier (a detector's ``RUN/pretrain``) names held-out crops.

The crops are those the detectors pre-train on, written for the test split
too (``engine.pretrain.write_pretrain_crops``: ground-truth boxes by class and
background crops with IoU < 0.3), so the figure is the pre-training's own task
on images it never saw. Each crop is warped to the classifier's resize and
centre-cropped, as in pre-training. Prints the confusion matrix (rows: truth),
the accuracy on object crops and on background crops.

    python benchmarks/crop_confusion.py --write DATA CROPS    # CROPS/train and CROPS/test from DATA
    python benchmarks/crop_confusion.py RUN CROPS             # RUN: sppnet train classify --data CROPS ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sppnet.data.datasets import open_detection_dataset
from sppnet.data.transforms import to_tensor
from sppnet.engine.classification import load_classifier
from sppnet.engine.pretrain import PretrainConfig, write_pretrain_crops

BACKGROUND = "__background__"


def write(data: Path, crops: Path) -> None:
    """The detectors' pre-training crops (detect-*-tiny settings) of both splits."""
    config = PretrainConfig(background_per_image=3, min_crop=8)
    for split in ("train", "test"):
        write_pretrain_crops(open_detection_dataset(data, split), crops / split, config, seed=0)


def confusion(run: Path, crops: Path) -> None:
    model, config, names = load_classifier(run)
    model.eval()
    resize, crop = config.train.resize, config.train.crop
    margin = (resize - crop) // 2
    counts = np.zeros((len(names), len(names)), int)
    with torch.no_grad():
        for truth, name in enumerate(names):
            for path in sorted((crops / "test" / name).glob("*")):
                warped = np.asarray(Image.open(path).convert("RGB").resize((resize, resize), Image.BILINEAR))
                view = to_tensor(warped)[None, :, margin:margin + crop, margin:margin + crop]
                counts[truth, int(model(view).argmax(1))] += 1
    print("rows: truth, columns: guess;", ", ".join(names))
    print(counts)
    objects = [i for i, name in enumerate(names) if name != BACKGROUND]
    background = [i for i, name in enumerate(names) if name == BACKGROUND]
    print(f"object crops: {100 * sum(counts[i, i] for i in objects) / counts[objects].sum():.1f}% right; "
          f"background crops: {100 * sum(counts[i, i] for i in background) / max(1, counts[background].sum()):.1f}% right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write DATA's crops to CROPS instead")
    parser.add_argument("source", type=Path, help="RUN (a classifier run) or, with --write, DATA")
    parser.add_argument("crops", type=Path)
    args = parser.parse_args()
    if args.write:
        write(args.source, args.crops)
    else:
        confusion(args.source, args.crops)


if __name__ == "__main__":
    main()
