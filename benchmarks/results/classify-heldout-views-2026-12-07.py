"""Session 32 (issue 14): the runs of classify-heldout-2026-12-07.sh under each view.

For every OUT/run-S-NAME folder: top-1 error on OUT/cls-S's test split, full image
at the training side (``train.resize``, the view before this session), full image
at ``full_image_side`` (the matched side) and multi-view; for runs trained with
``train.average_decay`` also the last step's weights (their checkpoint's ``model``).
Prints one JSON line per run and weights, then mean +- std per variant.

    PYTHONPATH=src .venv/bin/python benchmarks/results/classify-heldout-views-2026-12-07.py OUT [--runs NAME ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from sppnet.data.folder import read_image_folder
from sppnet.data.images import load_image
from sppnet.data.transforms import to_tensor
from sppnet.engine.checkpoint import load_checkpoint, save_weights
from sppnet.evaluation.classification import full_image_side, load_classifier, predict_views


def errors(run: Path, data: Path) -> dict[str, float]:
    model, config, classes = load_classifier(run)
    samples = read_image_folder(data, "test", classes).samples
    sides = {"full@resize": config.train.resize, "full@matched": full_image_side(config.train)}
    wrong = defaultdict(int)
    for path, label in samples:
        image = to_tensor(load_image(path))
        for name, side in sides.items():
            wrong[name] += int(predict_views(model, image, "full", side, config.train.crop).argmax() != label)
        wrong["multi"] += int(predict_views(model, image, "multi", config.train.resize, config.train.crop).argmax() != label)
    return {name: 100 * count / len(samples) for name, count in wrong.items()}


def last_weights_copy(run: Path, tmp: Path) -> Path:
    copy = tmp / run.name
    copy.mkdir()
    for name in ("config.yaml", "classes.txt"):
        shutil.copy(run / name, copy / name)
    save_weights(copy / "model.safetensors", load_checkpoint(run / "checkpoint.safetensors").model)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--runs", nargs="*", help="variant names (default: all)")
    args = parser.parse_args()
    table = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for run in sorted(args.out.glob("run-*-*")):
            if not run.is_dir() or not (run / "model.safetensors").is_file():
                continue
            _, seed, name = run.name.split("-", 2)
            if args.runs and name not in args.runs:
                continue
            data = args.out / f"cls-{seed}"
            variants = [(name, run)]
            if load_checkpoint(run / "checkpoint.safetensors").averaged is not None:
                variants.append((f"{name} (last weights)", last_weights_copy(run, Path(tmp))))
            for label, folder in variants:
                row = errors(folder, data)
                print(json.dumps({"name": label, "seed": int(seed), **row}), flush=True)
                table[label].append(row)
    print("| variant | runs | full @ resize | full @ matched side | multi-view |\n|---|---|---|---|---|")
    for label, rows in table.items():
        cells = []
        for key in ("full@resize", "full@matched", "multi"):
            values = [row[key] for row in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} +- {spread:.1f}")
        print(f"| {label} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
