"""The detection papers' ablations over seeds, through the CLI a user runs.

For each seed (one dataset per seed, as in ``detector_seeds.py``), one SPP-net
run of the preset is trained (or an existing one reused) and then evaluated
several ways; R-CNN and the Fast R-CNN that SPP-net's in-context pre-training
trained are evaluated on the same test split. Test-time variants need no
retraining: each is a *view* of the run, a folder with links to its weights
and a copy of its config.yaml with one test setting changed.

| row | what changes | the papers' direction |
|---|---|---|
| SPP-net (preset) | nothing | |
| SPP-net, 1 scale | scales = [384], [640] or [1024] at test | multi-scale >= 1 scale |
| SPP-net, 1 scale, trained at it | fc fine-tuning, SVMs and box regression at 640 too (same trunk) | within 2 of R-CNN |
| SPP-net, no box regression | ``--no-box-regression`` | with >= without |
| SPP-net, SVMs | ``--scorer svm`` (the preset scores with the softmax) | SVMs >= softmax (R-CNN) |
| Fast R-CNN | the run's ``pretrain-context-fast-rcnn`` | Fast R-CNN >= SPP-net |
| SPP-net + Fast R-CNN combined | ``--combine`` (NMS over the union, the paper's) | combined >= the better one |
| SPP-net + Fast R-CNN fused | ``--combine --combine-by fusion`` (weighted box fusion) | as combined |
| R-CNN | its own run (trained here unless given) | SPP-net within 2 points |
| SPP-net + R-CNN fused | ``--combine RCNN --combine-by fusion`` | as combined |

The classification ablations (SPP vs no SPP, single- vs multi-size, the
test views) are ``benchmarks/classification.py``.

    python benchmarks/ablations.py OUT --seeds 0,1,2 [--data-kind heldout] [--data-root DIR] \
        [--sppnet-runs 'DIR/run{seed}'] [--rcnn-runs 'DIR/seed-{seed}/run'] [--no-rcnn]

Prints one line per evaluation as it finishes, then a markdown table of
VOC07 mAP per seed with mean +- std; appends JSON lines to OUT/ablations.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from sppnet.engine.detection_stages import TestConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_seeds import make_data  # noqa: E402

PRESET_ROW = "SPP-net (preset)"
# The files a detector run's evaluation reads; a view links them.
TEST_FIELDS = frozenset(field.name for field in dataclasses.fields(TestConfig))
RUN_FILES = ("backbone.txt", "classes.txt", "model.safetensors", "finetune.safetensors", "svm.safetensors", "bbox.safetensors", "features")


def sppnet() -> list[str]:
    return [sys.executable, "-m", "sppnet"]


def run_logged(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def view(run: Path, folder: Path, test_edits: dict) -> Path:
    """A folder that is ``run`` with ``test_edits`` applied to its config's
    top level (e.g. scales) and ``test`` section; weights are links."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        source, link = run.resolve() / name, folder / name
        if source.exists() and not link.is_symlink():
            link.symlink_to(source)
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key, value in test_edits.items():
        if key in config.get("test", {}) or key in TEST_FIELDS:  # a test setting newer than the run
            config.setdefault("test", {})[key] = value
        else:
            config[key] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def evaluate(run: Path, data: Path, out: Path, name: str, extra: list[str]) -> dict:
    """``sppnet eval detect`` into its own results folder; mAP and AP per class."""
    out.mkdir(parents=True, exist_ok=True)
    slug = name.lower().replace(" ", "-").replace(",", "").replace("+", "and").replace("(", "").replace(")", "")
    result_json = out / f"{slug}.json"
    if not result_json.is_file():
        command = [*sppnet(), "eval", "detect", "--run", str(run), "--data", str(data), "--split", "test",
                   "--results", str(out / f"results-{slug}"), "--json", str(result_json), *extra]
        run_logged(command, out / f"{slug}.log")
    return json.loads(result_json.read_text())


def train(method: str, data: Path, run: Path, log: Path, extra: tuple[str, ...] = ()) -> None:
    """Train the method's tiny preset (with ``extra`` CLI arguments) into
    ``run``; resume an interrupted run; leave a finished one (box regressors
    are the last thing a run writes)."""
    if (run / "bbox.safetensors").is_file():
        return
    command = [*sppnet(), "train", "detect", "--method", method, "--data", str(data), "--out", str(run), *extra]
    run_logged(command + (["--resume"] if run.exists() else []), log)


def seed_rows(args: argparse.Namespace, seed: int) -> dict[str, float]:
    data = make_data(args.data_kind, args.data_root or args.out, seed, args.train, args.test)
    folder = args.out / f"seed-{seed}"
    spp_run = Path(args.sppnet_runs.format(seed=seed)) if args.sppnet_runs else folder / "sppnet"
    if not args.sppnet_runs:
        train("sppnet", data, spp_run, folder / "sppnet-train.log")
    # The Fast R-CNN that SPP-net's in-context pre-training trained: next to
    # the trunk's classifier run that backbone.txt pins.
    trunk = Path((spp_run / "backbone.txt").read_text(encoding="utf-8").splitlines()[0])
    context = trunk.parent / "pretrain-context-fast-rcnn"
    train("sppnet", data, folder / "sppnet-1-scale-640", folder / "sppnet-1-scale-640-train.log",
          ("--backbone", str(trunk), "--set", "scales=[640]", "--set", "train_scales=null"))
    evals = folder / "evals"
    rows = {
        PRESET_ROW: (spp_run, []),
        # The paper's one scale (688 on VOC's ~500-pixel images) enlarges the
        # image; which of ours is best depends on the objects' sizes, so three.
        **{f"SPP-net, 1 scale ({s})": (view(spp_run, folder / f"view-1-scale-{s}", {"scales": [s], "train_scales": None}), [])
           for s in (384, 640, 1024)},
        # The paper's 1-scale SPP-net is fine-tuned at that scale too: the fc stages
        # trained again at 640 alone on the same in-context trunk (~3 minutes).
        "SPP-net, 1 scale (640), trained at it": (folder / "sppnet-1-scale-640", []),
        "SPP-net, no box regression": (spp_run, ["--no-box-regression"]),
        "SPP-net, SVMs": (spp_run, ["--scorer", "svm"]),
        "Fast R-CNN": (context, []),
        "SPP-net + Fast R-CNN combined": (spp_run, ["--combine", str(context)]),
        "SPP-net + Fast R-CNN fused": (spp_run, ["--combine", str(context), "--combine-by", "fusion"]),
    }
    if not args.no_rcnn:
        rcnn_run = Path(args.rcnn_runs.format(seed=seed)) if args.rcnn_runs else folder / "rcnn"
        if not args.rcnn_runs:
            train("rcnn", data, rcnn_run, folder / "rcnn-train.log")
        rows["R-CNN"] = (rcnn_run, [])
        rows["SPP-net + R-CNN fused"] = (spp_run, ["--combine", str(rcnn_run), "--combine-by", "fusion"])
    maps = {}
    for name, (run, extra) in rows.items():
        if not (run / "config.yaml").is_file():
            print(f"seed {seed}: {name}: no run at {run}, skipped", flush=True)
            continue
        result = evaluate(run, data, evals, name, extra)
        maps[name] = 100 * result["map"]
        with open(args.out / "ablations.jsonl", "a") as handle:
            handle.write(json.dumps({"seed": seed, "row": name, "run": str(run), "extra": extra,
                                     "map": result["map"], "ap": result["ap"]}) + "\n")
        print(f"seed {seed}: {name}: mAP {maps[name]:.1f}", flush=True)
    return maps


def table(per_seed: dict[int, dict[str, float]]) -> str:
    seeds = sorted(per_seed)
    names = list(dict.fromkeys(name for maps in per_seed.values() for name in maps))
    lines = ["| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean +- std |",
             "|---|" + "---|" * len(seeds) + "---|"]
    for name in names:
        values = [per_seed[s].get(name) for s in seeds]
        present = [v for v in values if v is not None]
        spread = statistics.stdev(present) if len(present) > 1 else 0.0
        cells = " | ".join("" if v is None else f"{v:.1f}" for v in values)
        lines.append(f"| {name} | {cells} | {statistics.mean(present):.1f} +- {spread:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-kind", default="heldout", choices=("heldout", "synth"))
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--data-root", type=Path, default=None,
                        help="where the datasets are made or found (default: OUT)")
    parser.add_argument("--sppnet-runs", default=None, help="existing SPP-net runs, '{seed}' in the path")
    parser.add_argument("--rcnn-runs", default=None, help="existing R-CNN runs, '{seed}' in the path")
    parser.add_argument("--no-rcnn", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    per_seed = {seed: seed_rows(args, seed) for seed in (int(s) for s in args.seeds.split(","))}
    print(table(per_seed))


if __name__ == "__main__":
    main()
