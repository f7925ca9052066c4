"""SPP-net's classification ablation (the paper's Table 2), over seeds.

For each seed, a fresh image folder (``--data synth``: ``sppnet data synth
--task classify``; ``heldout``: ``benchmarks/heldout_set.py --task classify``,
other objects and backgrounds) and three small ZF-5 classifiers trained from
scratch with the same schedule (the ``classify-tiny`` preset): the no-SPP
baseline (one 3x3/2 pool, fixed 96 x 96 input), SPP single-size (96 crops)
and SPP multi-size (alternate epochs at 96 and 77 = 224 and 180 scaled). Each
is tested with every view mode it admits; the table gives the mean and
standard deviation of the top-1 error over the seeds. Then, on the last
seed's single-size model, times SPP-net's multi-view testing on feature maps
(conv once per scale and mirror) against forwarding each of the 96 views
through the whole network, and checks how far their predictions differ.

Run: .venv/bin/python benchmarks/classification.py [--data synth|heldout] [--seeds 0,1,2]
     [--train 1000] [--test 200] [--epochs N] [--set KEY=VALUE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
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
from sppnet.engine.classification import ClassifyConfig, load_classifier, train_classifier
from sppnet.evaluation.classification import (
    VIEW_MODES, _views_on_feature_maps, evaluate_classifier, multi_view_scales,
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


def _make_data(kind: str, out: Path, train: int, test: int, seed: int) -> None:
    if kind == "synth":
        synthesize_classification(out, train=train, test=test, seed=seed)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from heldout_set import make_classification_set

        make_classification_set(out, train, test, seed)


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * spread:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("synth", "heldout"), default="synth")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (data and training)")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a classify-tiny value for every variant (repeatable)")
    parser.add_argument("--timing-images", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="write every run's errors here")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    variants = {
        "no SPP (fixed 96)": ["model.spp=false"],
        "SPP single-size": [],
        "SPP multi-size": ["train.multi_size=true"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for seed in seeds:
            data = Path(tmp) / f"data-{seed}"
            _make_data(args.data, data, args.train, args.test, seed)
            for name, overrides in variants.items():
                # From scratch, as the paper's ablations and RESULTS.md's figures
                # (--set pretrain.generic_images=13200 starts from the generic trunk).
                overrides = ["pretrain.generic_images=0"] + overrides + args.set + [f"train.seed={seed}", "train.val_split=null"] + (
                    [f"train.epochs={args.epochs}"] if args.epochs else [])
                config = load_config(ClassifyConfig, "classify-tiny", overrides)
                run = Path(tmp) / f"{name.replace(' ', '_')}-{seed}"
                started = time.perf_counter()
                train_classifier(config, data, run, progress=False, log=lambda message: None)
                minutes = (time.perf_counter() - started) / 60
                modes = VIEW_MODES if config.model.spp else ("center", "10")
                errors = {m: evaluate_classifier(run, data, "test", m, log=lambda message: None)["top1_error"]
                          for m in modes}
                runs.append({"seed": seed, "model": name, "minutes": round(minutes, 2), "top1_error": errors})
                print(f"seed {seed}: trained {name} in {minutes:.1f} min: "
                      + ", ".join(f"{m} {100 * e:.1f}%" for m, e in errors.items()), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"data": args.data, "train": args.train, "test": args.test,
                                             "overrides": args.set, "runs": runs}, indent=1))
        print(f"\ntop-1 error (%), mean +- std over seeds {seeds}: {args.data} data, {args.train} training and "
              f"{args.test} test images per seed")
        print("| model | " + " | ".join(VIEW_MODES) + " |")
        print("|---|" + "---|" * len(VIEW_MODES))
        for name in variants:
            cells = []
            for mode in VIEW_MODES:
                values = [r["top1_error"][mode] for r in runs if r["model"] == name and mode in r["top1_error"]]
                cells.append(_mean_std(values) if values else "-")
            print(f"| {name} | " + " | ".join(cells) + " |")

        data = Path(tmp) / f"data-{seeds[-1]}"
        model, config, _ = load_classifier(Path(tmp) / f"SPP_single-size-{seeds[-1]}")
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
