"""SPP-net's classification ablation on the generated image-folder set.

Trains three small ZF-5 classifiers from scratch with the same schedule (the
``classify-tiny`` preset): the no-SPP baseline (one 3x3/2 pool, fixed 96 x 96
input), SPP single-size (96 crops) and SPP multi-size (alternate epochs at 96
and 77 = 224 and 180 scaled). Then tests each with every view mode it admits
and prints top-1 errors; finally times SPP-net's multi-view testing on feature
maps (conv once per scale and mirror) against forwarding each of the 96 views
through the whole network, and checks how far their predictions differ.

Run: .venv/bin/python benchmarks/classification.py [--train 1000] [--test 200] [--epochs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from sppnet.config import load_config
from sppnet.data.folder import read_image_folder
from sppnet.data.images import load_image
from sppnet.data.synthetic import synthesize_classification
from sppnet.data.transforms import crop, multi_view_boxes, resize_min_side, to_tensor
from sppnet.engine.classification import ClassifyConfig, train_classifier
from sppnet.evaluation.classification import (
    VIEW_MODES, _views_on_feature_maps, evaluate_classifier, load_classifier, multi_view_scales,
)


@torch.no_grad()
def views_one_by_one(model, image: torch.Tensor, crop_size: int) -> torch.Tensor:
    """The same 96 multi-view windows, each cropped and run through the whole network."""
    logits = []
    for scale in multi_view_scales(crop_size):
        resized = resize_min_side(image, scale)
        for source in (resized, resized.flip(-1)):
            for box in multi_view_boxes(resized.shape[1], resized.shape[2], crop_size):
                logits.append(model(crop(source, box)[None]))
    return torch.cat(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--timing-images", type=int, default=20)
    args = parser.parse_args()
    variants = {
        "no SPP (fixed 96)": ["model.spp=false"],
        "SPP single-size": [],
        "SPP multi-size": ["train.multi_size=true"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize_classification(data, train=args.train, test=args.test, seed=0)
        results = {}
        for name, overrides in variants.items():
            overrides = overrides + ([f"train.epochs={args.epochs}"] if args.epochs else [])
            config = load_config(ClassifyConfig, "classify-tiny", overrides)
            run = Path(tmp) / name.replace(" ", "_")
            started = time.perf_counter()
            train_classifier(config, data, run, progress=False, log=lambda message: None)
            minutes = (time.perf_counter() - started) / 60
            modes = VIEW_MODES if config.model.spp else ("center", "10")
            results[name] = {m: evaluate_classifier(run, data, "test", m, log=lambda message: None)["top1_error"] for m in modes}
            print(f"trained {name} in {minutes:.1f} min: "
                  + ", ".join(f"{m} {100 * e:.1f}%" for m, e in results[name].items()), flush=True)
        print(f"\ntop-1 error (%) on {args.test} generated test images, {args.train} training images")
        print(f"{'model':22s}" + "".join(f"{m:>9s}" for m in VIEW_MODES))
        for name, errors in results.items():
            print(f"{name:22s}" + "".join(f"{100 * errors[m]:9.1f}" if m in errors else f"{'-':>9s}" for m in VIEW_MODES))

        model, config, _ = load_classifier(Path(tmp) / "SPP_single-size")
        samples = read_image_folder(data, "test").samples[: args.timing_images]
        maps_s = views_s = 0.0
        max_diff = 0.0
        for path, _ in samples:
            image = to_tensor(load_image(path))
            start = time.perf_counter()
            on_maps = _views_on_feature_maps(model, image, config.train.crop)
            maps_s += time.perf_counter() - start
            start = time.perf_counter()
            one_by_one = views_one_by_one(model, image, config.train.crop)
            views_s += time.perf_counter() - start
            max_diff = max(max_diff, (F.softmax(on_maps, 1).mean(0) - F.softmax(one_by_one, 1).mean(0)).abs().max().item())
        n = len(samples)
        print(f"\nmulti-view testing, {on_maps.shape[0]} views per image, mean of {n} images:")
        print(f"  on feature maps (conv once per scale and mirror): {1e3 * maps_s / n:.1f} ms/image")
        print(f"  each view through the whole network:             {1e3 * views_s / n:.1f} ms/image")
        print(f"  speed-up {views_s / maps_s:.1f}x; largest difference in averaged class probability {max_diff:.3f}")


if __name__ == "__main__":
    main()
