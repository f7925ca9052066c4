"""Watch a classifier's units while it trains: why runs sit on a plateau.

Trains an SPP classifier (``classify-tiny``'s model: ZF-5 or ``zf5-bn`` at
width 0.25, hidden 256, dropout 0.3; random 96-pixel crops of 25-100% of the
area) on an image folder for ``STEPS`` mini-batches of 32 and prints, every 50
steps, the mean training loss, the mean pooled conv5 value (near 0: conv5 has
gone quiet), the fraction of fc6 units that fire on the batch and the spread
of the logits. A loss stuck at ln(classes) with fc6 going silent is the
plateau: the units die before the classifier finds a signal.

    python benchmarks/plateau_probe.py DATA BACKBONE OPTIMIZER LR STEPS [FC_BIAS]

e.g. ``DATA zf5 adam 1e-3 400`` (classify-tiny's optimiser and lr, no
warm-up) or ``DATA zf5 sgd 0.01 400``; ``FC_BIAS`` sets fc6 and fc7's initial
bias (default 0, Krizhevsky used 1).
"""

from __future__ import annotations

import sys
import time

import torch
from torch.nn import functional as F

from sppnet.data.folder import read_image_folder
from sppnet.engine.classification_data import TrainCrops
from sppnet.engine.classification import (
    ClassifierModelConfig, ClassifyTrainConfig, build_classifier,
)


def main() -> None:
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    data, backbone, optimiser, lr, steps = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    bias = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    torch.manual_seed(0)
    dataset = read_image_folder(data, "train")
    crops = TrainCrops(dataset, ClassifyTrainConfig(resize=110, crop=96, crop_area=(0.25, 1.0)), 0)
    model = build_classifier(ClassifierModelConfig(backbone=backbone, width=0.25, hidden=256, dropout=0.3),
                             len(dataset.classes), 96)
    for layer in (model.fc6[0], model.fc7[0]):
        torch.nn.init.constant_(layer.bias, bias)
    optimizer = (torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4) if optimiser == "adam"
                 else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4))
    generator = torch.Generator().manual_seed(0)
    model.train()
    started, losses = time.perf_counter(), []
    print(f"{len(dataset.classes)} classes: uniform outputs give loss ln({len(dataset.classes)}) = "
          f"{torch.log(torch.tensor(float(len(dataset.classes)))):.3f}")
    for step in range(steps):
        items = [crops[i] for i in torch.randint(len(crops), (32,), generator=generator).tolist()]
        images, labels = torch.stack([item[0] for item in items]), torch.tensor([item[1] for item in items])
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 49:
            with torch.no_grad():
                pooled = model.spp(model.trunk(images))
                fc6 = model.fc6(pooled)
            print(f"step {step + 1}: loss {sum(losses[-50:]) / 50:.3f}, pooled conv5 mean {pooled.mean():.3f}, "
                  f"fc6 firing {(fc6 > 0).float().mean():.3f}, logit std {logits.std():.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
