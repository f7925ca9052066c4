"""Session 36 (issue 14): a classifier run's full-image errors drawn on one sheet.

    PYTHONPATH=src python benchmarks/results/classify-errors-2026-12-07.py RUN DATA OUT.jpg [--split test]

Each test image the run names wrongly (the `sppnet eval classify --views full`
view: the image at `full_image_side`) is drawn at 128 x 128 with "true->guess
probability" above it, six to a row. What `sppnet eval classify`'s confusion
counts cannot show: whether the wrong ones are hard for anyone (a faint object,
a distractor that looks like a class) or plain objects the net misreads.
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from sppnet.data.folder import read_image_folder
from sppnet.data.images import load_image
from sppnet.data.transforms import to_tensor
from sppnet.engine.classification import load_classifier
from sppnet.evaluation.classification import full_image_side, predict_views

TILE, PER_ROW = 128, 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    model, config, classes = load_classifier(args.run)
    side = full_image_side(config.train)
    tiles = []
    dataset = read_image_folder(args.data, args.split, classes)
    for path, label in dataset.samples:
        probs = predict_views(model, to_tensor(load_image(path)), "full", side, config.train.crop)
        guess = int(probs.argmax())
        if guess != label:
            tile = Image.open(path).convert("RGB").resize((TILE, TILE))
            draw = ImageDraw.Draw(tile)
            draw.rectangle((0, 0, TILE, 12), fill=(0, 0, 0))
            draw.text((2, 0), f"{classes[label]}->{classes[guess]} {float(probs[guess]):.2f}", fill=(255, 255, 255))
            tiles.append(tile)
    rows = max(1, (len(tiles) + PER_ROW - 1) // PER_ROW)
    sheet = Image.new("RGB", (TILE * PER_ROW, TILE * rows))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % PER_ROW) * TILE, (i // PER_ROW) * TILE))
    sheet.save(args.out, quality=80)
    print(f"{len(tiles)} of {len(dataset.samples)} wrong; drawn in {args.out}")


if __name__ == "__main__":
    main()
