"""``sppnet demo``: the end-to-end slice that exists so far, on generated data.

1. The SPP layer on maps from 1 x 1 to 43 x 57: one output length, equal to
   adaptive max pooling at every level.
2. A small ZF-5 SPP classifier trained from scratch on generated shape images
   of several sizes (one size per mini-batch, shared weights), then tested on
   sizes it never saw, down to maps smaller than the finest pyramid level.
3. roi_spp against torchvision's roi_pool loop on the SPP-net detection
   workload (a short run of benchmarks/pooling.py).

Writes ``summary.json`` into the output folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F
from torchvision.ops import roi_pool

from sppnet.data.shapes import SHAPE_CLASSES, shape_batch
from sppnet.models.backbones import ZF5
from sppnet.models.classifier import SPPClassifier
from sppnet.ops import roi_spp, spatial_pyramid_pool

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    out: Path = Path("demo-out")
    seed: int = 0
    # Training image sizes (H, W); each mini-batch uses one of them.
    train_sizes: tuple[tuple[int, int], ...] = ((64, 64), (64, 96), (96, 64), (96, 96), (96, 128), (128, 96))
    # Test sizes, several never seen in training; 48 x 160 gives a 2 x 9 conv5 map.
    test_sizes: tuple[tuple[int, int], ...] = ((48, 160), (80, 80), (112, 144), (160, 120), (192, 192))
    steps: int = 600
    batch_size: int = 32
    test_images_per_size: int = 100
    trunk_width: float = 0.25  # ZF-5 channels x 0.25
    hidden: int = 256
    learning_rate: float = 1e-3
    benchmark_windows: int = 2000
    levels: tuple[int, ...] = field(default=(6, 3, 2, 1))


def _normalize(images: torch.Tensor) -> torch.Tensor:
    # Shape images lie in [0, 1] with mean ~0.5: centre them for the trunk.
    return (images - 0.5) / 0.25


def _layer_check(levels: tuple[int, ...]) -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for h, w in [(1, 1), (2, 3), (5, 7), (13, 13), (43, 57)]:
        x = torch.randn(1, 256, h, w, generator=generator)
        out = spatial_pyramid_pool(x, levels)
        reference = torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in levels], 1)
        rows.append({"map": [h, w], "length": out.shape[1], "equals_adaptive_max_pool": bool(torch.equal(out, reference))})
        print(f"  map 256 x {h:2d} x {w:2d} -> {out.shape[1]} values, equal to adaptive max pooling: {rows[-1]['equals_adaptive_max_pool']}")
    return rows


def _train_classifier(config: DemoConfig) -> tuple[SPPClassifier, list[float]]:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = SPPClassifier(ZF5(config.trunk_width), len(SHAPE_CLASSES), config.levels, config.hidden, dropout=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    losses = []
    model.train()
    start = time.perf_counter()
    for step in range(config.steps):
        height, width = config.train_sizes[step % len(config.train_sizes)]
        images, labels = shape_batch(config.batch_size, height, width, generator)
        loss = F.cross_entropy(model(_normalize(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            recent = sum(losses[-50:]) / 50
            print(f"  step {step + 1:4d}/{config.steps}  loss {recent:.3f}  ({time.perf_counter() - start:.0f} s)")
    return model, losses


@torch.no_grad()
def _test_classifier(model: SPPClassifier, config: DemoConfig) -> list[dict]:
    model.eval()
    generator = torch.Generator().manual_seed(config.seed + 1)
    rows = []
    for height, width in config.test_sizes:
        images, labels = shape_batch(config.test_images_per_size, height, width, generator)
        conv5 = model.trunk(images[:1]).shape[2:]
        accuracy = (model(_normalize(images)).argmax(1) == labels).float().mean().item()
        seen = (height, width) in config.train_sizes
        rows.append({"size": [height, width], "conv5": list(conv5), "accuracy": accuracy, "seen_in_training": seen})
        print(f"  {height:3d} x {width:3d} images (conv5 {conv5[0]} x {conv5[1]}){' ' if seen else ', unseen size'}: "
              f"accuracy {accuracy:.1%} (chance {1 / len(SHAPE_CLASSES):.0%})")
    return rows


def _pooling_benchmark(config: DemoConfig) -> dict:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 256, 43, 57, generator=generator)
    n = config.benchmark_windows
    x = torch.randint(0, 57, (n, 2), generator=generator).sort(1).values
    y = torch.randint(0, 43, (n, 2), generator=generator).sort(1).values
    rois = torch.stack([torch.zeros(n, dtype=torch.long), x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)
    roi_spp(features, rois, config.levels)  # load the compiled kernel
    times = {}
    outputs = {}
    for name, pool in (
        ("roi_spp", lambda: roi_spp(features, rois, config.levels)),
        ("torchvision", lambda: torch.cat([roi_pool(features, rois.float(), (k, k), 1.0).flatten(1) for k in config.levels], 1)),
    ):
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            outputs[name] = pool()
            seconds.append(time.perf_counter() - start)
        times[name] = sorted(seconds)[1]
    result = {
        "windows": n,
        "roi_spp_s": times["roi_spp"],
        "torchvision_loop_s": times["torchvision"],
        "speedup": times["torchvision"] / times["roi_spp"],
        "identical": bool(torch.equal(outputs["roi_spp"], outputs["torchvision"])),
    }
    print(f"  {n} windows on a 256 x 43 x 57 map: roi_spp {result['roi_spp_s'] * 1e3:.1f} ms, "
          f"torchvision roi_pool loop {result['torchvision_loop_s'] * 1e3:.1f} ms "
          f"({result['speedup']:.1f}x), identical outputs: {result['identical']}")
    return result


def run_demo(config: DemoConfig) -> dict:
    config.out.mkdir(parents=True, exist_ok=True)
    print(f"1. The SPP layer, levels {config.levels}: any map size in, one length out")
    layer = _layer_check(config.levels)
    print(f"2. Training a ZF-5 x {config.trunk_width} SPP classifier on generated {'/'.join(SHAPE_CLASSES)} images "
          f"of {len(config.train_sizes)} sizes")
    model, losses = _train_classifier(config)
    print("   testing at several sizes, most never seen in training:")
    tests = _test_classifier(model, config)
    print("3. RoI pyramid pooling, the SPP-net detection workload:")
    bench = _pooling_benchmark(config)
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "spp_layer": layer,
        "classifier": {"final_loss": sum(losses[-50:]) / 50, "tests": tests},
        "pooling_benchmark": bench,
    }
    path = config.out / "summary.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"Wrote {path}")
    return summary
