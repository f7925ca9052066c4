"""One-off (session 26): R-CNN fine-tuning's window inputs per step, before and after.

Before: each of the step's 8 images decoded and normalised again, its 16 windows
warped by torchvision's ``roi_align`` on the image padded by a pixel of zeros.
After: images kept in memory once decoded (``engine.memory_cache.MemoryCache``) and the
windows warped by one ``grid_sample`` call (``models.detection.rcnn.warp_windows``).
Both on the same batches of a generated set's training images, side by side,
interleaved, median of rounds::

    python benchmarks/results/rcnn-window-inputs-2026-12-06.py DATA [--threads 2]
"""

import argparse
import statistics
import time

import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

from sppnet.data.datasets import open_detection_dataset
from sppnet.data.images import load_image
from sppnet.data.transforms import to_tensor
from sppnet.engine.memory_cache import TRAINING_IMAGE_BYTES, MemoryCache
from sppnet.models.detection.rcnn import context_boxes, warp_windows

SIZE, CONTEXT, IMAGES, WINDOWS = 96, 7, 8, 16  # detect-rcnn-tiny's step: 8 images x 16 windows of 96 x 96


def before(record, boxes):
    image = to_tensor(load_image(record.image_path))
    windows = context_boxes(boxes, SIZE, CONTEXT) + 1
    rois = torch.cat([windows.new_zeros(len(windows), 1), windows], dim=1)
    return roi_align(F.pad(image, (1, 1, 1, 1))[None], rois, output_size=(SIZE, SIZE), spatial_scale=1.0,
                     sampling_ratio=1, aligned=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = open_detection_dataset(args.data, "train").images
    generator = torch.Generator().manual_seed(0)
    decoded = MemoryCache(lambda path: to_tensor(load_image(path)), TRAINING_IMAGE_BYTES)
    for record in records:  # a run's later steps: every image decoded once already
        decoded(record.image_path)

    def after(record, boxes):
        return warp_windows(decoded(record.image_path), boxes, SIZE, CONTEXT)

    times = {"before": [], "after": []}
    for _ in range(args.rounds):
        chosen = torch.randperm(len(records), generator=generator)[:IMAGES].tolist()
        batch = []
        for index in chosen:
            record = records[index]
            corner = torch.rand(WINDOWS, 2, generator=generator) * torch.tensor([record.width, record.height])
            batch.append((record, torch.cat([corner, corner + 8 + torch.rand(WINDOWS, 2, generator=generator) * 150], 1)))
        for name, inputs in (("before", before), ("after", after)):
            started = time.perf_counter()
            [inputs(record, boxes) for record, boxes in batch]
            times[name].append(time.perf_counter() - started)
        difference = max((a - b).abs().max().item() for a, b in zip(
            [before(r, b) for r, b in batch[:1]], [after(r, b) for r, b in batch[:1]]))
        assert difference < 1e-3, difference
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    print(f"{args.threads} thread(s), {IMAGES} images x {WINDOWS} windows of {SIZE} x {SIZE} per step, "
          f"median of {args.rounds}: before {medians['before']:.1f} ms, after {medians['after']:.1f} ms "
          f"({medians['before'] / medians['after']:.2f}x)")


if __name__ == "__main__":
    main()
