"""How many of a classifier's units never fire? (issue 14: the plateau)

A ReLU unit whose input is negative for every image gets no gradient and
stays dead: it is lost to the classifier and to every detector that inherits
its layers (SPP-net keeps conv5 frozen and fine-tunes fc6/fc7 from here). For
a classifier run and an image folder, this script feeds ``--images`` centre
crops of the training split (the run's resize and crop) through the network
and reports, per layer (conv5 channels, fc6 and fc7 units), how many never
fire on any of them and the mean fraction of units that fire per image.

    python benchmarks/dead_units.py RUN DATA [--split train] [--images 512]

``RUN`` is a classifier run folder, or a detector run with ``pretrain/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sppnet.data.folder import read_image_folder
from sppnet.data.images import ImageError, load_image
from sppnet.data.transforms import center_box, crop, resize_min_side, to_tensor
from sppnet.engine.classification import load_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path, help="an image folder (DATA/<split>/<class>/*.jpg)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    run = args.run / "pretrain" if (args.run / "pretrain" / "model.safetensors").is_file() else args.run
    model, config, _ = load_classifier(run)
    samples = read_image_folder(args.data, args.split).samples
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))[: args.images].tolist()
    batch = []
    for index in order:
        try:
            image = resize_min_side(to_tensor(load_image(samples[index][0])), config.train.resize)
        except ImageError:
            continue
        batch.append(crop(image, center_box(image.shape[1], image.shape[2], config.train.crop)[0]))
    with torch.no_grad():
        conv5 = model.trunk(torch.stack(batch))
        fc6 = model.fc6(model.spp(conv5))
        fc7 = model.fc7(fc6)
    print(f"{run}: {len(batch)} centre crops of {args.data}/{args.split}")
    for name, values in (("conv5", conv5.flatten(2).amax(2)), ("fc6", fc6), ("fc7", fc7)):
        fires = values > 0
        never = int((~fires.any(0)).sum())
        print(f"  {name:5s} {never:4d} of {values.shape[1]:4d} never fire ({100 * never / values.shape[1]:5.1f}%); "
              f"{100 * fires.float().mean():5.1f}% fire per image")


if __name__ == "__main__":
    main()
