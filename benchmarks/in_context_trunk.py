"""Train a crop-pretrained trunk in context, for comparisons on the same trunk.

    python benchmarks/in_context_trunk.py DATA CROP_RUN OUT [--preset detect-fast-rcnn-tiny] [--iterations N]
        [--context-fc] [--set train.lr=0.005 ...]

Runs sppnet's in-context pre-training stage (``engine.pretrain.train_in_context``:
a Fast R-CNN trained from ``CROP_RUN`` on ``DATA``'s training split, its trunk
put under the crop classifier's fc layers) and writes the classifier run to
``OUT/seed-0/run/pretrain``, so that ``benchmarks/detector_seeds.py ...
--backbone-of OUT`` trains a detector on it (use one OUT per data seed, or
move the folder to ``OUT/seed-N/run/pretrain``). This is how RESULTS.md's
"Pre-training in context" table compares SPP-net on the crop trunk and on
the in-context trunk. The stage runs as in ``detect-sppnet-tiny``: the Fast
R-CNN preset with that preset's ``pretrain.context_overrides`` (the papers'
RoI sampling, not OHEM), then ``--set`` changes (``KEY=VALUE`` of the Fast
R-CNN preset, as the CLI's ``--set``), recorded in the Fast R-CNN run's
``config.yaml``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sppnet.config import load_config
from sppnet.data.datasets import open_detection_dataset
from sppnet.engine.pretrain import PretrainConfig, train_in_context
from sppnet.engine.sppnet_detection import SPPNetConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("crop_run", type=Path, help="the crop classifier run (e.g. RUN/pretrain of a detector run)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", default="detect-fast-rcnn-tiny")
    parser.add_argument("--iterations", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0, help="the N of OUT/seed-N/run/pretrain")
    parser.add_argument("--context-fc", action="store_true",
                        help="hand over the Fast R-CNN's fc6/fc7 too (pretrain.context_fc)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the Fast R-CNN preset (repeatable)")
    args = parser.parse_args()
    sppnet_overrides = load_config(SPPNetConfig, "detect-sppnet-tiny").pretrain.context_overrides
    train = open_detection_dataset(args.data, "train")
    work = args.out / "work"
    config = PretrainConfig(context_preset=args.preset, context_overrides=(*sppnet_overrides, *args.set),
                            context_iterations=args.iterations, context_fc=args.context_fc)
    trunk = train_in_context(config, train, args.data, work, args.crop_run, log=print)
    target = args.out / f"seed-{args.seed}" / "run" / "pretrain"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trunk, target, dirs_exist_ok=True)
    print(f"in-context trunk written to {target}")


if __name__ == "__main__":
    main()
