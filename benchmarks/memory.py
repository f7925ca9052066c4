"""Peak memory of the dataset-wide stages at two dataset sizes (issue 8,
bounded memory): proposals, the SPP-net conv5 feature cache, detection and VOC
evaluation should stream over the images, so their peak resident memory must
not grow with the number of images beyond a few bytes of bookkeeping each.

1. Generates one VOC-layout detection set (seed 0, images of 96-128 pixels so
   that 1000 are quick): 20 training images and max(--images) test images.
   The split ``testN`` lists the first N test images, so every smaller set is
   a prefix of the largest one.
2. Trains the tiniest Fast R-CNN (preset detect-fast-rcnn-tiny with one
   pre-training epoch, 2 iterations, scale 64, grid proposals) on the training
   images: its quality does not matter, only what testing it holds in memory.
3. Runs every stage below on each split in a fresh Python process, with empty
   caches, and reports the process's peak anonymous resident memory (the
   data it holds, imports included; see ``PeakMemory`` for why not
   ``ru_maxrss``), a fresh process per figure so that one stage's peak
   cannot hide another's:

   imports       import torch and the modules below, nothing else (baseline)
   records       open the split: the ImageRecord list (held by every stage)
   proposals-run data.proposals.compute_proposals over the split (grid, at most
                 2000 windows, no minimum size: ~1700 windows per image)
   proposals     engine.detection_stages.dataset_proposals, same settings
   features      engine.feature_cache.FeatureCache.fill, ZF-5 x 0.25 trunk
                 (random weights), scale 64
   detect        engine.detection_stages.detect_dataset with the tiny
                 Fast R-CNN (proposals computed on the way, grid as trained),
                 then evaluation.write_voc_results
   evaluate      evaluation.report.evaluate_results_folder on the folder that
                 ``detect`` wrote: read the results, VOC07 AP of every class

Prints, per stage, the peak at each size, the ratio of the largest to the
smallest, and the growth per added image; the ``imports`` row is the floor.

Run: .venv/bin/python benchmarks/memory.py [--images 100,1000] [--out FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STAGES = ("imports", "records", "proposals-run", "proposals", "features", "detect", "evaluate")
TRAIN_IMAGES = 20
SIDES = (96, 128)  # generated image sides (min, max)
# Fast R-CNN tiny, cut to what trains in seconds: quality does not matter here.
DETECTOR_OVERRIDES = ["pretrain.epochs=1", "train.iterations=2", "train.lr_steps=[]", "train.checkpoint_every=1000",
                      "scales=[64]", "train_scales=null", "proposals=grid", "max_proposals=2000"]


# ------------------------------------------------------------------ one stage, in a fresh process


def _grid_config():
    from sppnet.proposals import ProposalConfig

    return ProposalConfig(method="grid", max_proposals=2000, min_size=0)


def _run_stage(stage: str, data: Path, split: str, work: Path, run: Path) -> dict:
    """Run one stage; returns what to print besides the memory."""
    import torch

    from sppnet.data.datasets import open_detection_dataset
    from sppnet.proposals import compute_proposals
    from sppnet.engine.detection_stages import dataset_proposals, detect_dataset
    from sppnet.engine.detectors import load_detector
    from sppnet.engine.feature_cache import FeatureCache
    from sppnet.evaluation.report import evaluate_results_folder
    from sppnet.evaluation.results import write_voc_results
    from sppnet.models.backbones.registry import build_backbone

    if stage == "imports":
        return {}
    dataset = open_detection_dataset(data, split)
    if stage == "records":
        return {"images": len(dataset)}
    if stage == "proposals-run":
        result = compute_proposals(dataset.images, _grid_config(), work / "proposals", progress=False)
        return {"images": len(result.boxes), "windows": sum(len(b) for b in result.boxes.values())}
    if stage == "proposals":
        boxes = dataset_proposals(dataset, _grid_config(), work, log=lambda message: None)
        return {"images": len(boxes)}
    if stage == "features":
        torch.manual_seed(0)
        cache = FeatureCache(work / "features", build_backbone("zf5", width=0.25).eval(), [64])
        filled = cache.fill(dataset.images, progress=False)
        return {"images": filled.computed}
    if stage == "detect":
        detector = load_detector(run)
        per_class, seconds = detect_dataset([detector], dataset, work, log=lambda message: None)
        write_voc_results(per_class, dataset.classes, dataset.split, work / "results")
        return {"detections": sum(len(d) for d in per_class.values()), "s_per_image": round(seconds, 4)}
    if stage == "evaluate":
        summary = evaluate_results_folder(dataset, work / "results", "voc07")
        return {"map": summary["map"]}
    raise ValueError(f"unknown stage {stage!r}")


class PeakMemory:
    """The peak anonymous resident memory of this process, sampled every
    ``interval`` seconds in a thread (Linux: ``/proc/self/statm``, resident
    minus shared pages), plus the kernel's high-water mark of the whole
    resident set (``VmHWM``) for reference.

    Why not just ``VmHWM`` or ``ru_maxrss``: ``ru_maxrss`` survives fork and
    exec on Linux (a child of this script, large after training, would report
    the parent's peak), and both count the pages of shared libraries mapped
    from files, which depend on what the page cache holds (the kernel maps
    cached neighbours of every page touched), so they move by hundreds of MiB
    between identical runs. The anonymous pages are the data a stage holds.
    A spike shorter than the interval (or than Python's 5 ms thread switch
    interval, in pure-Python code) can be missed; memory a stage keeps cannot."""

    def __init__(self, interval: float = 0.001) -> None:
        self.peak_kib = 0
        self._interval = interval
        self._page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        try:
            self._statm = open("/proc/self/statm", "rb", buffering=0)  # noqa: SIM115 - re-read until stop()
        except OSError as error:
            raise SystemExit(f"benchmarks/memory.py reads /proc/self/statm (Linux): {error}") from None
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        self._statm.seek(0)
        fields = self._statm.read().split()
        self.peak_kib = max(self.peak_kib, (int(fields[1]) - int(fields[2])) * self._page_kib)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.sample()
        self._statm.close()
        return self.peak_kib


def _hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child(stage: str, data: Path, split: str, work: Path, run: Path) -> None:
    peak = PeakMemory()  # before the imports: they are part of every figure (the "imports" row)
    started = time.perf_counter()
    info = _run_stage(stage, data, split, work, run)
    anon = peak.stop()
    print(json.dumps({"peak_kib": anon, "hwm_kib": _hwm_kib(), "seconds": round(time.perf_counter() - started, 2),
                      **info}))


def measure(stage: str, data: Path, split: str, work: Path, run: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child", stage, "--data", str(data), "--split", split,
               "--work", str(work), "--run", str(run)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} on {split} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ set-up and table


def prepare(out: Path, sizes: list[int]) -> tuple[Path, Path]:
    from sppnet.config import load_config
    from sppnet.data.datasets import open_detection_dataset
    from sppnet.data.synthetic import DetectionSynthConfig, synthesize_detection
    from sppnet.engine.fast_rcnn import FastRCNNConfig
    from sppnet.engine.fast_rcnn_training import train_fast_rcnn

    data, run = out / "data", out / "fast-rcnn"
    if (data / "ImageSets" / "Main" / f"test{max(sizes)}.txt").is_file() and (run / "model.safetensors").is_file():
        print(f"reusing the set and the detector in {out}", flush=True)
        return data, run
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    synthesize_detection(data, DetectionSynthConfig(train=TRAIN_IMAGES, test=max(sizes), seed=0,
                                                    min_side=SIDES[0], max_side=SIDES[1]))
    ids = (data / "ImageSets" / "Main" / "test.txt").read_text(encoding="utf-8").split()
    for size in sizes:
        split = data / "ImageSets" / "Main" / f"test{size}.txt"
        split.write_text("".join(f"{i}\n" for i in ids[:size]), encoding="utf-8")
    print(f"generated {TRAIN_IMAGES} training and {max(sizes)} test images of {SIDES[0]}-{SIDES[1]} px "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    config = load_config(FastRCNNConfig, "detect-fast-rcnn-tiny", DETECTOR_OVERRIDES)
    train_fast_rcnn(config, open_detection_dataset(data, "train"), out / "train-root", run, log=lambda message: None)
    print(f"tiny Fast R-CNN trained in {time.perf_counter() - started:.0f} s", flush=True)
    return data, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="100,1000", help="comma-separated test split sizes (default 100,1000)")
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder, kept; a set and a detector already there are reused "
                             "(default: a temporary folder, removed)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--split", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.split, args.work, args.run)
        return
    sizes = sorted({int(n) for n in args.images.split(",")})
    requested = {s for s in args.stages.split(",") if s}
    stages = [s for s in STAGES if s in requested]  # this order: evaluate reads what detect wrote
    unknown = sorted(requested - set(STAGES))
    if len(sizes) < 2 or sizes[0] < 1 or unknown:
        parser.error(f"--images needs two or more positive sizes; unknown stages: {unknown}")
    out = args.out or Path(tempfile.mkdtemp(prefix="sppnet-memory-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        data, run = prepare(out, sizes)
        results: dict[str, dict[int, dict]] = {stage: {} for stage in stages}
        for stage in stages:
            for size in sizes:
                work = out / "work" / f"{stage if stage != 'evaluate' else 'detect'}-{size}"
                if stage != "evaluate":
                    shutil.rmtree(work, ignore_errors=True)  # empty caches: everything is computed
                results[stage][size] = measure(stage, data, f"test{size}", work, run)
                print(f"  {stage} on {size} images: {results[stage][size]}", flush=True)
        small, large = sizes[0], sizes[-1]
        print(f"\npeak anonymous RSS (MiB) of a fresh process per stage; images of {SIDES[0]}-{SIDES[1]} px; "
              f"torch threads {_threads()}")
        floor = results.get("imports")
        header = "".join(f"{f'{n} images':>13s}" for n in sizes)
        above = "".join(f"{f'+{n}':>10s}" for n in sizes) if floor else ""
        print(f"{'stage':16s}{header}{f'ratio {large}/{small}':>16s}{'KiB/added image':>17s}"
              + (f"   MiB above imports: {above}" if floor else ""))
        for stage in stages:
            peaks = [results[stage][n]["peak_kib"] for n in sizes]
            ratio = peaks[-1] / peaks[0]
            per_image = (peaks[-1] - peaks[0]) / (large - small)
            line = f"{stage:16s}" + "".join(f"{p / 1024:13.1f}" for p in peaks) + f"{ratio:16.3f}{per_image:17.1f}"
            if floor:
                line += " " * 22 + "".join(f"{(p - floor[n]['peak_kib']) / 1024:10.1f}" for p, n in zip(peaks, sizes))
            print(line)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
