"""Proposal recall at IoU 0.5 of the objects not marked difficult, by object size (session 37).

    PYTHONPATH=src python benchmarks/results/proposal-recall-by-size-2026-12-07.py DATA [SPLIT] [KEY=VALUE ...]

The proposals are detect-sppnet-tiny's (with the --set style overrides given), computed
into DATA's proposal cache where missing (one worker). Size: the square root of the box's
area, in the image's pixels.
"""
import sys
from pathlib import Path
import numpy as np, torch
from sppnet.config import load_config
from sppnet.engine.sppnet_detection import SPPNetConfig
from sppnet.data.datasets import open_detection_dataset
from sppnet.proposals import compute_proposals
from torchvision.ops import box_iou
data = Path(sys.argv[1]); split = sys.argv[2] if len(sys.argv) > 2 else "test"
overrides = sys.argv[3:]
cfg = load_config(SPPNetConfig, "detect-sppnet-tiny", overrides)
ds = open_detection_dataset(data, split)
run = compute_proposals(ds.images, cfg.proposal_config, data / "proposals", workers=1)
hits, sizes, counts = [], [], []
for r in ds.images:
    boxes = run.boxes[r.image_id] if hasattr(run, "boxes") else run[r.image_id]
    boxes = torch.as_tensor(boxes).float().reshape(-1, 4)
    counts.append(len(boxes))
    gt = r.boxes.float()[~r.difficult.bool()]
    if len(gt) == 0: continue
    best = box_iou(gt, boxes).max(1).values if len(boxes) else torch.zeros(len(gt))
    hits += (best >= 0.5).tolist(); sizes += ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])).sqrt().tolist()
hits, sizes = np.array(hits), np.array(sizes)
print(f"{data} {overrides}: recall@0.5 {hits.mean():.3f} of {len(hits)}; boxes/image {np.mean(counts):.0f}")
for lo, hi in ((0, 20), (20, 32), (32, 64), (64, 1e9)):
    m = (sizes >= lo) & (sizes < hi)
    print(f"  size {lo}-{hi}: {hits[m].mean():.3f} of {m.sum()}")
