"""Proposal recall and speed of each method on the generated detection set.

Writes a fresh generated set (seed 0) to a temporary folder, runs every method
on its test split with an empty cache, and prints proposals per image, recall
of the non-difficult ground truth at IoU 0.5 and 0.7, and seconds per image.
Edge boxes runs only with --edge-model (OpenCV's structured edge model file,
which is not distributed with sppnet).

Run: .venv/bin/python benchmarks/proposals.py [--images 20] [--edge-model FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sppnet.proposals import ProposalConfig, compute_proposals, proposal_recall
from sppnet.data.synthetic import DetectionSynthConfig, synthesize_detection
from sppnet.data.voc import read_voc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--edge-model", type=Path, default=None)
    parser.add_argument("--resize-to", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        synthesize_detection(root, DetectionSynthConfig(train=1, test=args.images, seed=0))
        dataset = read_voc(root, "test", classes=[l.strip() for l in (root / "classes.txt").read_text().splitlines()])
        methods = ["selective-search-fast", "selective-search-quality", "grid"]
        if args.edge_model:
            methods.insert(2, "edge-boxes")
        print(f"{len(dataset)} generated images ({sum(r.num_objects for r in dataset.images)} objects), "
              f"resize_to {args.resize_to}, at most 2000 proposals")
        print(f"{'method':26s}{'proposals/img':>14s}{'recall@0.5':>12s}{'recall@0.7':>12s}{'s/img':>8s}{'proposals/s':>13s}")
        for method in methods:
            config = ProposalConfig(method=method, resize_to=args.resize_to, edge_model=args.edge_model)
            run = compute_proposals(dataset.images, config, Path(tmp) / "cache", workers=1, progress=False)
            recall = proposal_recall(run.boxes, dataset.images, (0.5, 0.7))
            per_image = sum(len(b) for b in run.boxes.values()) / len(run.boxes)
            seconds = run.seconds / len(run.boxes)
            print(f"{method:26s}{per_image:14.0f}{recall[0.5]:12.3f}{recall[0.7]:12.3f}{seconds:8.2f}{per_image / seconds:13.0f}")


if __name__ == "__main__":
    main()
