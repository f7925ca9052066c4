"""Do a detector's pre-trained features transfer from crops to pooled windows?

SPP-net keeps the pre-trained conv5 frozen and pools every window from the
whole image's conv5 map; the pre-training (``RUN/pretrain``, a classifier
trained on crops) saw each object as a crop on its own, zero-padded by the
convolutions. This script asks the pre-trained classifier, unchanged, to
name each ground-truth object of a split two ways:

- **crop**: the object's box (grown by ``--context``) cut out, warped to the
  classifier's resize and centre-cropped, as in pre-training;
- **pooled**: the same box pooled from the whole image's conv5 map at the
  detector's scales (``pool_windows``, the detector's own pooling), then fc6-fc8.

and reports both accuracies, plus the pooled accuracy on random background
windows (IoU < 0.3 with every object). A large gap means the frozen features
of a window are not those the fc layers were trained on.

    python benchmarks/window_transfer.py RUN DATA [--split test] [--images 60]
        [--scales 192,384,640] [--target 96] [--context 1.0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sppnet.data.datasets import open_detection_dataset
from sppnet.data.images import load_image
from sppnet.data.transforms import to_tensor
from sppnet.engine.feature_cache import FeatureCache
from sppnet.engine.pretrain import grown_box
from sppnet.engine.classification import load_classifier
from sppnet.models.windows import pool_windows
from sppnet.ops import box_iou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a detector run folder with pretrain/ (or a classifier run)")
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--scales", default="192,384,640")
    parser.add_argument("--target", type=float, default=96.0)
    parser.add_argument("--context", type=float, default=1.0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/sppnet-window-transfer"))
    args = parser.parse_args()

    classifier_run = args.run / "pretrain" if (args.run / "pretrain").is_dir() else args.run
    model, config, names = load_classifier(classifier_run)
    model.eval()
    dataset = open_detection_dataset(args.data, args.split)
    to_model = [list(names).index(name) for name in dataset.classes]
    cache = FeatureCache(args.cache, model.trunk, [int(s) for s in args.scales.split(",")])
    resize, crop = config.train.resize, config.train.crop
    margin = (resize - crop) // 2
    counts = {"objects": 0, "crop": 0, "pooled": 0, "background": 0, "background_pooled": 0}
    per_class = {name: [0, 0, 0] for name in dataset.classes}  # objects, named right as crops, pooled
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for record in dataset.images[: args.images]:
            maps = {scale: cached for (scale, _), cached in cache.compute(record, variants=[False]).items()}
            image = load_image(record.image_path)
            # the pre-training's own crop rule, so a crop here is a crop as it was trained on
            boxes = torch.tensor([grown_box(box, args.context, record.width, record.height)
                                  for box in record.boxes.tolist()], dtype=torch.float32).reshape(-1, 4)
            pooled = model.head(pool_windows(maps, boxes, model.trunk.geometry, config.model.levels, target=args.target))
            for box, label, guess in zip(boxes.int().tolist(), record.labels.tolist(), pooled.argmax(1).tolist()):
                x1, y1, x2, y2 = box
                warped = np.asarray(Image.fromarray(image[y1:y2, x1:x2]).resize((resize, resize), Image.BILINEAR))
                view = to_tensor(warped)[None, :, margin:margin + crop, margin:margin + crop]
                crop_right = int(model(view).argmax(1)) == to_model[label]
                pooled_right = guess == to_model[label]
                counts["objects"] += 1
                counts["pooled"] += pooled_right
                counts["crop"] += crop_right
                tally = per_class[dataset.classes[label]]
                tally[0] += 1
                tally[1] += crop_right
                tally[2] += pooled_right
            for _ in range(3):
                side = int(torch.randint(24, max(25, min(record.width, record.height)), (1,), generator=generator))
                x = int(torch.randint(0, record.width - side + 1, (1,), generator=generator))
                y = int(torch.randint(0, record.height - side + 1, (1,), generator=generator))
                window = torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32)
                if len(record.boxes) and float(box_iou(window, record.boxes).max()) >= 0.3:
                    continue
                logits = model.head(pool_windows(maps, window, model.trunk.geometry, config.model.levels, target=args.target))
                counts["background"] += 1
                counts["background_pooled"] += int(logits.argmax(1)) == to_model[0]
    objects, background = max(1, counts["objects"]), max(1, counts["background"])
    print(f"{classifier_run}, {args.data} {args.split}, {counts['objects']} objects, context {args.context}, "
          f"scales {args.scales}, target {args.target:g}")
    print(f"  object accuracy: crop {counts['crop'] / objects:.3f}, pooled from the image map {counts['pooled'] / objects:.3f}")
    print(f"  background windows ({counts['background']}): pooled accuracy {counts['background_pooled'] / background:.3f}")
    print("  per class (objects right as crops / pooled): " + ", ".join(
        f"{name} {crop}/{pooled} of {total}" for name, (total, crop, pooled) in per_class.items() if total))


if __name__ == "__main__":
    main()
