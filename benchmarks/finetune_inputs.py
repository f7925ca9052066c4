"""SPP-net fine-tuning's window inputs: read from the feature cache every
iteration vs kept decoded in memory (``MapsInMemory``).

Each fine-tuning iteration of ``detect-sppnet-tiny`` draws 8 training images
and pools 16 windows from each image's cached conv5 maps (3 scales, mirrored
or not). This times that step, side by side in one process, alternating:

- cache: ``FeatureCache.load`` (read the three safetensors files, check the
  image hash and the map checksums, float16 -> float32, channels-last copy
  in the pooling kernel), then ``pool_windows``;
- memory: ``MapsInMemory.load`` (each image read and verified once, kept
  float32 channels-last), then ``pool_windows``;

on ``--images`` generated detection images with the preset's trunk
(ZF-5 at width 0.25, random weights: the time does not depend on them).
Prints the median seconds per iteration of each and the ratio, and checks
that both give the same pooled values.

Run: .venv/bin/python benchmarks/finetune_inputs.py [--images 60] [--iterations 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sppnet.data.datasets import open_detection_dataset
from sppnet.data.synthetic import DetectionSynthConfig, synthesize_detection
from sppnet.engine.feature_cache import FeatureCache, MapsInMemory
from sppnet.models.backbones import ZF5
from sppnet.models.windows import pool_windows

SCALES = (192, 384, 640)
LEVELS = (6, 3, 2, 1)


def _draws(records, iterations: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(iterations):
        for index in torch.randperm(len(records), generator=generator)[:8].tolist():
            record = records[index]
            corners = torch.rand(16, 4, generator=generator) * torch.tensor(
                [record.width, record.height, record.width, record.height])
            boxes = torch.cat([corners[:, :2].minimum(corners[:, 2:]), corners[:, :2].maximum(corners[:, 2:]) + 8], 1)
            yield record, boxes, bool(torch.rand(1, generator=generator) < 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    trunk = ZF5(width=0.25).eval()
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_detection(Path(tmp) / "data", DetectionSynthConfig(train=args.images, test=1, seed=0))
        records = open_detection_dataset(Path(tmp) / "data", "train").images
        cache = FeatureCache(Path(tmp) / "cache", trunk, SCALES, flips=True)
        cache.fill(records, progress=False)
        memory = MapsInMemory(cache)

        def step(load, seed: int) -> list[torch.Tensor]:
            return [pool_windows(load(record, flipped), boxes, trunk.geometry, LEVELS, target=96.0,
                                 flipped=flipped, image_width=record.width)
                    for record, boxes, flipped in _draws(records, args.iterations, seed)]

        same = all(torch.equal(a, b) for a, b in zip(step(cache.load, 99), step(memory.load, 99)))  # also fills memory
        times = {"cache": [], "memory": []}
        for round_ in range(args.rounds):
            for name, load in (("cache", cache.load), ("memory", memory.load)):
                started = time.perf_counter()
                step(load, round_)
                times[name].append((time.perf_counter() - started) / args.iterations)
    cache_s, memory_s = statistics.median(times["cache"]), statistics.median(times["memory"])
    print(f"{args.images} images, 8 per iteration, 16 windows each, scales {SCALES}, torch threads {torch.get_num_threads()}")
    print(f"  from the feature cache: {cache_s * 1e3:.1f} ms per iteration")
    print(f"  kept in memory:         {memory_s * 1e3:.1f} ms per iteration ({cache_s / memory_s:.1f}x faster; "
          f"{memory.size / 2**20:.0f} MiB held)")
    print(f"  same pooled values: {same}")


if __name__ == "__main__":
    main()
