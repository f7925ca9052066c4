"""Watch a classifier's units while it trains: why runs sit on a plateau.

Trains an SPP classifier (``classify-tiny``'s model: ZF-5 or ``zf5-bn`` at
width 0.25, hidden 256, dropout 0.3) on an image folder for ``STEPS``
mini-batches of 32 and prints, every 50 steps (``--every``), the mean
training loss and error, the mean pooled conv5 value (near 0: conv5 has gone
quiet), the fraction of fc6 units that fire on the batch and the spread of
the logits. A loss stuck at ln(classes) with fc6 going silent is the
plateau: the units die before the classifier finds a signal. Crops are
those of ``--preset``'s training config (default ``classify-tiny``: random
96-pixel crops of 25-100% of the area; ``classify-crops-tiny``: the generic
stage's crops).

    python benchmarks/plateau_probe.py DATA BACKBONE OPTIMIZER LR STEPS [FC_BIAS] [--warmup N] [--preset NAME]

e.g. ``DATA zf5 adam 1e-3 400`` (classify-tiny's optimiser and lr, no
warm-up) or ``DATA zf5 sgd 0.01 400``; ``FC_BIAS`` sets fc6 and fc7's initial
bias (default 0, Krizhevsky used 1). Session 12 (the generic stage's
images): ``GENERIC/data zf5 adam 1e-3 1200 --warmup 500 --preset
classify-crops-tiny --every 200``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from sppnet.config import load_config
from sppnet.data.folder import read_image_folder
from sppnet.engine.classification_data import TrainCrops
from sppnet.engine.classification import ClassifierModelConfig, ClassifyConfig, build_classifier
from sppnet.engine.schedule import warmed_up_lr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("backbone")
    parser.add_argument("optimiser", choices=["adam", "sgd"])
    parser.add_argument("lr", type=float)
    parser.add_argument("steps", type=int)
    parser.add_argument("fc_bias", type=float, nargs="?", default=0.0)
    parser.add_argument("--warmup", type=int, default=0, help="steps of linear lr warm-up")
    parser.add_argument("--preset", default="classify-tiny", help="classifier preset whose crops are used")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="default: 1e-4 with adam, 5e-4 with sgd (the presets')")
    parser.add_argument("--decoupled", action="store_true",
                        help="adam: decay the weights apart from the gradient (AdamW) instead of adding it to the gradient")
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = read_image_folder(args.data, "train")
    crops = TrainCrops(dataset, load_config(ClassifyConfig, args.preset).train, 0)
    model = build_classifier(ClassifierModelConfig(backbone=args.backbone, width=0.25, hidden=256, dropout=0.3),
                             len(dataset.classes), 96)
    for layer in (model.fc6[0], model.fc7[0]):
        torch.nn.init.constant_(layer.bias, args.fc_bias)
    decay = args.weight_decay if args.weight_decay is not None else (1e-4 if args.optimiser == "adam" else 5e-4)
    adam = torch.optim.AdamW if args.decoupled else torch.optim.Adam
    optimizer = (adam(model.parameters(), lr=args.lr, weight_decay=decay) if args.optimiser == "adam"
                 else torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=decay))
    generator = torch.Generator().manual_seed(0)
    model.train()
    started, losses, errors = time.perf_counter(), [], []
    print(f"{len(dataset.classes)} classes: uniform outputs give loss ln({len(dataset.classes)}) = "
          f"{torch.log(torch.tensor(float(len(dataset.classes)))):.3f}")
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = warmed_up_lr(args.lr, step, args.warmup)
        items = [crops[i] for i in torch.randint(len(crops), (32,), generator=generator).tolist()]
        images, labels = torch.stack([item[0] for item in items]), torch.tensor([item[1] for item in items])
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        errors.append((logits.argmax(1) != labels).float().mean().item())
        if (step + 1) % args.every == 0:
            with torch.no_grad():
                pooled = model.spp(model.trunk(images))
                fc6 = model.fc6(pooled)
            n = args.every
            print(f"step {step + 1}: loss {sum(losses[-n:]) / n:.3f}, error {sum(errors[-n:]) / n:.3f}, "
                  f"pooled conv5 mean {pooled.mean():.3f}, fc6 firing {(fc6 > 0).float().mean():.2f}, "
                  f"logit std {logits.std():.3f} ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
