"""What classifier training reads each epoch: the random crops of an image
folder (reproducible per seed, epoch and image), the global mini-batches
every rank shares, and the per-epoch centre-view check."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from sppnet.data.folder import ClassificationDataset
from sppnet.data.images import ImageError, load_image
from sppnet.data.transforms import (
    center_box, colour_jitter, crop, random_channel_order, random_crop, random_erasing, random_right_angle,
    random_scaled_crop,
    resize_min_side, to_tensor,
)
from sppnet.engine import distributed
from sppnet.models.classifier import SPPClassifier

if TYPE_CHECKING:
    from sppnet.engine.classification import ClassifyTrainConfig

__all__ = ["sample_generator", "TrainCrops", "collate_crops", "global_batches", "center_view_error"]


def sample_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """Sample ``index``'s generator in ``epoch``: stream 0 crops and mirrors, stream 1 draws dropout masks."""
    value = ((seed * 1_000_003 + epoch) * 1_000_003 + index) % (2**63)
    if stream:
        value = (value * 1_000_003 + stream) % (2**63)
    return torch.Generator().manual_seed(value)


class TrainCrops(Dataset):
    """Random crops of an image folder; unreadable images yield None (reported)."""

    def __init__(self, dataset: ClassificationDataset, config: ClassifyTrainConfig, epoch: int) -> None:
        self.samples, self.config, self.epoch = dataset.samples, config, epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = to_tensor(load_image(path))
        except ImageError as error:
            return str(error)
        generator = sample_generator(self.config.seed, self.epoch, index)
        image = resize_min_side(image, self.config.resize)
        if self.config.crop_area is None:
            image = random_crop(image, self.config.crop, self.config.flip, generator)
        else:
            image = random_scaled_crop(image, self.config.crop, self.config.crop_area, self.config.flip, generator)
        # Drawn only when asked for, so that runs without them keep their crops.
        if self.config.right_angles:
            image = random_right_angle(image, generator)
        if self.config.channel_order:
            image = random_channel_order(image, generator)
        image = colour_jitter(image, self.config.colour_jitter, generator)
        if self.config.erase:
            image = random_erasing(image, self.config.erase, generator)
        return image, label, index


def collate_crops(items):
    """-> (images, labels, dataset indices, errors); ``None`` for the first three when no image loaded."""
    good = [item for item in items if not isinstance(item, str)]
    errors = [item for item in items if isinstance(item, str)]
    if not good:
        return None, None, None, errors
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), [g[2] for g in good], errors


def global_batches(count: int, batch_size: int, order: torch.Generator) -> list[list[int]]:
    """The epoch's global mini-batches: a permutation drawn from ``order``
    cut into ``batch_size`` pieces, the last one possibly smaller. Every rank
    draws the same ones and takes its share of each (``distributed.shard``)."""
    permutation = torch.randperm(count, generator=order).tolist()
    return [permutation[start: start + batch_size] for start in range(0, count, batch_size)]


@torch.no_grad()
def _center_view_mistakes(model: SPPClassifier, samples, resize: int, crop_size: int) -> tuple[int, int]:
    """(wrong, readable) over ``samples`` ((path, label) pairs), centre views
    (``evaluation.classification``'s "center" mode, written here so that
    training does not depend on the evaluation package)."""
    model.eval()
    wrong, total = 0, 0
    for path, label in samples:
        try:
            image = to_tensor(load_image(path))
        except ImageError:
            continue
        resized = resize_min_side(image, resize)
        logits = model(crop(resized, center_box(resized.shape[1], resized.shape[2], crop_size)[0])[None])
        wrong += int(logits.argmax().item() != label)
        total += 1
    return wrong, total


def center_view_error(model: SPPClassifier, dataset: ClassificationDataset, resize: int, crop: int) -> float:
    """Top-1 error of the centre crop (a cheap per-epoch check); in a process
    group each rank scores its shard of the images and the counts are summed."""
    wrong, total = _center_view_mistakes(model, distributed.shard(dataset.samples), resize, crop)
    wrong, total = distributed.all_reduce_sum(torch.tensor([wrong, total], dtype=torch.float64)).tolist()
    return wrong / max(total, 1)
