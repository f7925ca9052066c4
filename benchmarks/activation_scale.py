"""How large a trunk's conv5 maps and pooled windows are, trunk by trunk.

    python benchmarks/activation_scale.py DATA CLASSIFIER_RUN [CLASSIFIER_RUN ...] [--images 8] [--scale 384]

For the first ``--images`` training images of the VOC-layout ``DATA``, each
run's trunk maps the image at one scale (``models.windows.image_maps``, the
detectors' image-to-map function), and this prints the mean absolute value
and RMS of conv5, the mean length of the whole-map SPP vector (what fc6
reads), and the norm of every conv and fc weight. Without normalisation
layers the same SGD lr takes relatively larger fc steps on longer inputs, so
two trunks that differ here may want different fine-tuning lrs (RESULTS.md
"The in-context stage's learning rate").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sppnet.data.datasets import open_detection_dataset
from sppnet.data.images import load_image
from sppnet.data.transforms import to_tensor
from sppnet.engine.classification import load_classifier
from sppnet.models.windows import image_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", nargs="+", type=Path, help="classifier runs (RUN/pretrain of a detector run)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--scale", type=int, default=384)
    args = parser.parse_args()
    train = open_detection_dataset(args.data, "train")
    images = [to_tensor(load_image(record.image_path)) for record in train.images[:args.images]]
    for run in args.runs:
        model, _, _ = load_classifier(run)
        model.eval()
        absolute, squares, lengths = [], [], []
        with torch.no_grad():
            for image in images:
                conv5 = image_maps(model.trunk, image, [args.scale], None)[args.scale].features.float()
                absolute.append(conv5.abs().mean().item())
                squares.append(conv5.pow(2).mean().item())
                lengths.append(model.spp(conv5[None]).norm().item())
        count = len(images)
        print(f"{run}: conv5 mean |x| {sum(absolute) / count:.3f}, RMS {(sum(squares) / count) ** 0.5:.3f}; "
              f"SPP vector length {sum(lengths) / count:.1f} ({count} images at {args.scale})")
        norms = [f"{name.removesuffix('.weight')} {parameter.norm().item():.1f}"
                 for name, parameter in model.named_parameters() if name.endswith("weight") and parameter.dim() > 1]
        print("  weight norms: " + ", ".join(norms))


if __name__ == "__main__":
    main()
