"""Feature transfer (SPEC section 8): SPP features of any image folder and
linear SVMs on them.

Shapes: N images, D feature size, K classes.

``extract_features`` runs a trained SPP classifier on whole images at one or
several scales (shorter side = scale, aspect kept) and takes either the pooled
SPP vector (``"pool"``, the paper's pool5) or fc7, averaged over the scales.
``transfer`` trains one-vs-rest linear SVMs on ``n`` training images per class
(Caltech-101 protocol: 30) and reports the test accuracy and the VOC-style mAP
of the per-class SVM scores (VOC 2007 classification protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from sppnet.data.folder import ClassificationDataset, read_image_folder
from sppnet.data.images import ImageError, load_image
from sppnet.data.records import Skipped
from sppnet.data.transforms import resize_min_side, to_tensor
from sppnet.engine.classification import load_classifier
from sppnet.evaluation.voc import voc_ap
from sppnet.models.classifier import SPPClassifier
from sppnet.models.svm import SVMConfig, train_linear_svms

__all__ = ["FEATURE_LAYERS", "extract_features", "transfer"]

FEATURE_LAYERS = ("pool", "fc7")


@torch.no_grad()
def extract_features(
    model: SPPClassifier, dataset: ClassificationDataset, scales: Sequence[int], layer: str = "fc7", progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[Skipped]]:
    """``(Tensor[N, D], LongTensor[N] labels, skipped)`` for the readable images."""
    from tqdm import tqdm

    if layer not in FEATURE_LAYERS:
        raise ValueError(f"unknown feature layer {layer!r}; choose one of {FEATURE_LAYERS}")
    if not model.uses_spp:
        raise ValueError("feature transfer at any image size needs an SPP model")
    model.eval()
    rows, labels, skipped = [], [], []
    for path, label in tqdm(dataset.samples, desc="features", disable=None if progress else True, leave=False):
        try:
            image = to_tensor(load_image(path))
        except ImageError as error:
            skipped.append(Skipped(path, str(error)))
            continue
        per_scale = []
        for scale in scales:
            pooled = model.spp(model.trunk(resize_min_side(image, scale)[None]))
            per_scale.append(pooled if layer == "pool" else model.fc7(model.fc6(pooled)))
        rows.append(torch.cat(per_scale).mean(0))
        labels.append(label)
    if not rows:
        raise ValueError(f"no readable images in {dataset.root / dataset.split}")
    return torch.stack(rows), torch.tensor(labels), skipped


def _class_ap(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    true_positives = np.cumsum(hits)
    recall = true_positives / hits.sum()
    precision = true_positives / np.arange(1, len(hits) + 1)
    return voc_ap(recall, precision, use_07_metric=True)


def transfer(
    run_dir: str | Path, data: str | Path, train_per_class: int | None = 30, scales: Sequence[int] = (224,),
    layer: str = "fc7", svm: SVMConfig = SVMConfig(C=1.0, loss="squared_hinge"), seed: int = 0, log=print,
) -> dict:
    """Linear SVMs on SPP features of ``data/train`` (``train_per_class``
    images per class, None for all), tested on ``data/test``."""
    model, _, _ = load_classifier(run_dir)
    train = read_image_folder(data, "train")
    test = read_image_folder(data, "test", train.classes)
    generator = torch.Generator().manual_seed(seed)
    if train_per_class is not None:
        chosen = []
        for label in range(len(train.classes)):
            members = [s for s in train.samples if s[1] == label]
            order = torch.randperm(len(members), generator=generator)[:train_per_class].tolist()
            chosen += [members[i] for i in sorted(order)]
        train = ClassificationDataset(train.root, train.split, train.classes, chosen, train.skipped)
    x_train, y_train, skipped = extract_features(model, train, scales, layer, progress=False)
    x_test, y_test, skipped_test = extract_features(model, test, scales, layer, progress=False)
    for item in skipped + skipped_test + train.skipped + test.skipped:
        log(f"skipped: {item}")
    # Rows scaled to unit L2 norm: C then means the same for pool and fc7.
    x_train, x_test = F.normalize(x_train, dim=1), F.normalize(x_test, dim=1)
    classes = len(train.classes)
    targets = torch.where(F.one_hot(y_train, classes).bool(), 1.0, -1.0)
    svms = train_linear_svms(x_train.double(), targets.double(), svm)
    scores = svms.decision_function(x_test.double())
    accuracy = float((scores.argmax(1) == y_test).float().mean())
    aps = {name: _class_ap(scores[:, k].numpy(), (y_test == k).numpy()) for k, name in enumerate(train.classes)}
    return {
        "layer": layer,
        "scales": list(scales),
        "train_images": len(x_train),
        "test_images": len(x_test),
        "accuracy": accuracy,
        "map": float(np.nanmean(list(aps.values()))),
        "ap": aps,
    }
