"""A detector's VOC07 mAP over seeds, through the CLI a user runs.

For each seed: make a dataset with that seed (``--data-kind synth``: ``sppnet data synth
--task detect``; ``heldout``: ``benchmarks/heldout_set.py``, objects and
backgrounds made differently), then ``sppnet train detect`` with the given
method, preset and ``--set`` overrides, then ``sppnet eval detect --run``. One
run at a time (two at once on 2 cores more than double each one's time).
The training seeds are the preset's: what changes between seeds is the
data (its images, objects and the proposals on them), and with it every
sample drawn from it. Prints each seed's mAP, training and evaluation seconds, and the mean and
standard deviation; appends one JSON line per run to ``--log``.

    python benchmarks/detector_seeds.py OUT --method sppnet --data-kind heldout \
        --seeds 0,1,2 [--train 300 --test 100] [--config detect-sppnet-tiny] \
        [--backbone-of OTHER_OUT] [--set KEY=VALUE ...]

``--backbone-of OTHER_OUT`` reuses the trunk pre-trained by another run of
this script on the same seeds (``OTHER_OUT/seed-N/run/pretrain``), so two
recipes can be compared on the same trunk. Datasets are kept in
``OUT/../data-<kind>-<seed>`` and reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _sppnet() -> list[str]:
    return [sys.executable, "-m", "sppnet"]


def make_data(kind: str, root: Path, seed: int, train: int, test: int) -> Path:
    data = root / f"data-{kind}-{seed}-{train}-{test}"
    if (data / "ImageSets" / "Main" / "test.txt").is_file():
        return data
    if kind == "synth":
        command = [*_sppnet(), "data", "synth", "--task", "detect", "--out", str(data), "--train", str(train),
                   "--test", str(test), "--seed", str(seed)]
    else:
        command = [sys.executable, str(HERE / "heldout_set.py"), str(data), "--train", str(train), "--test", str(test),
                   "--seed", str(seed)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return data


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    data = make_data(args.data_kind, args.out.parent, seed, args.train, args.test)
    folder = args.out / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    run = folder / "run"
    train = [*_sppnet(), "train", "detect", "--method", args.method, "--data", str(data), "--out", str(run)]
    if args.config:
        train += ["--config", args.config]
    if args.backbone_of:
        train += ["--backbone", str(args.backbone_of / f"seed-{seed}" / "run" / "pretrain")]
    for override in args.set:
        train += ["--set", override]
    started = time.perf_counter()
    with open(folder / "train.log", "w") as log:
        subprocess.run(train, check=True, stdout=log, stderr=subprocess.STDOUT)
    trained = time.perf_counter() - started
    evaluate = [*_sppnet(), "eval", "detect", "--run", str(run), "--data", str(data), "--split", "test",
                "--json", str(folder / "eval.json")]
    started = time.perf_counter()
    with open(folder / "eval.log", "w") as log:
        subprocess.run(evaluate, check=True, stdout=log, stderr=subprocess.STDOUT)
    evaluated = time.perf_counter() - started
    result = json.loads((folder / "eval.json").read_text())
    return {"seed": seed, "method": args.method, "config": args.config, "set": args.set, "data": args.data_kind,
            "backbone_of": str(args.backbone_of) if args.backbone_of else None, "map": result["map"],
            "ap": result["ap"], "train_s": round(trained, 1), "eval_s": round(evaluated, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--method", default="sppnet", choices=("sppnet", "rcnn", "fast-rcnn"))
    parser.add_argument("--config", default=None, help="preset or YAML (default: the method's tiny preset)")
    parser.add_argument("--data-kind", default="heldout", choices=("heldout", "synth"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--backbone-of", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--log", type=Path, default=None, help="JSON lines (default: OUT/runs.jsonl)")
    args = parser.parse_args()
    log = args.log or args.out / "runs.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    maps = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = run_seed(args, seed)
        maps.append(row["map"] * 100)
        with open(log, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"seed {seed}: mAP {row['map'] * 100:.1f}  (train {row['train_s']:.0f} s, eval {row['eval_s']:.0f} s)",
              flush=True)
    spread = statistics.stdev(maps) if len(maps) > 1 else 0.0
    print(f"{args.method} {args.config or 'tiny preset'} {' '.join(args.set)} on {args.data_kind} data: "
          f"mAP {statistics.mean(maps):.1f} +- {spread:.1f} over {len(maps)} seeds")


if __name__ == "__main__":
    main()
