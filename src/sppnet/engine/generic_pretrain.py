"""The generic pre-training stage: ImageNet's role, played by generated shapes.

The paper's trunks start from an ImageNet classifier; none can be downloaded
here. With ``pretrain.generic_images > 0`` a detector's pre-training first
trains its crop classifier's model as a classifier of that many images of
``sppnet.data.pretrain_set`` (44 shape classes in context, none of them a
detection class), and the crop stage then starts from that trunk instead of
from random weights, as the paper's detectors start from ImageNet's; with
``pretrain.crop_stage: false`` the detector starts from that classifier
itself (``generic_classifier``).

The trunk depends on the generated set and the recipe only, not on the
detection data, so it is made once per machine and kept, like downloaded
ImageNet weights, in ``$SPPNET_CACHE/generic-trunks/KEY/`` (default
``~/.cache/sppnet``), KEY a hash of everything that shapes it (the
generator's version, the image count and seed, the classifier config, torch's
version). ``trunk.safetensors`` is written last and atomically; a run that is
interrupted before it resumes from the stage's checkpoint next time. Runs
that need the trunk at once take turns; where the cache cannot be written,
the trunk is made in the run folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: no lock; two concurrent first runs would both train the trunk
    fcntl = None

from sppnet.config import load_config
from sppnet.engine.classification import ClassifyConfig, load_classifier, train_classifier
from sppnet.engine import distributed
from sppnet.engine.checkpoint import save_weights
from sppnet.engine.schedule import scaled_steps

__all__ = ["GENERATOR_VERSION", "cache_root", "generic_classifier", "generic_classify_config", "generic_trunk",
           "generic_trunk_key"]

# Bump when sppnet.data.pretrain_set draws different images for the same seed:
# trunks cached from the old images are then not reused.
GENERATOR_VERSION = 1
_TEST_FRACTION = 15  # one test image per this many training images: the stage's validation curve
# Whether a run leaves the plateau of uniform outputs depends on its random
# start and on the machine's rounding: the same recipe left it in epoch 4 on
# one CPU and never in 10 epochs on another (RESULTS.md, session 14). A run that
# ends within this much of chance error is no trunk; another start is tried.
_BELOW_CHANCE = 0.05
_ATTEMPTS = 3
_JUDGED_PER_CLASS = 5  # validation images per class below which the error says too little to judge


def cache_root() -> Path:
    """Where generic trunks are kept: ``$SPPNET_CACHE``, else ``~/.cache/sppnet``."""
    return Path(os.environ.get("SPPNET_CACHE") or Path.home() / ".cache" / "sppnet").expanduser()


def generic_classify_config(preset: str, epochs: int) -> ClassifyConfig:
    """The classifier config of the generic stage: ``preset``'s model and
    recipe for ``epochs`` epochs, the lr step at the same fraction of the run,
    a warm-up and fc6/fc7 biases started at 1: from scratch on 44 classes the
    preset's Adam at full lr sits at uniform outputs for epochs, and with the
    warm-up alone one CPU's run never left them (RESULTS.md, "A generated
    ImageNet stage" and session 14). Only the trunk is kept, so the biases
    shape nothing but this stage's start."""
    train = load_config(ClassifyConfig, preset).train
    steps = list(scaled_steps(train.lr_steps, train.epochs, epochs))
    return load_config(ClassifyConfig, preset, [
        f"train.epochs={epochs}", f"train.lr_steps={steps}", "train.min_iterations=0",
        "train.warmup_iterations=500", "train.val_split=test", "model.fc_bias=1.0"])


# Config fields added after trunks were first cached, with the value that trains
# as before they existed: left out of the key at that value, so that the caches
# made before them stay valid.
_NEWER_FIELDS = {("train", "trunk_lr_scale"): 1.0, ("train", "average_decay"): 0.0,
                 ("train", "erase"): 0.0, ("pretrain", "generic_fc"): False}


def generic_trunk_key(classify: ClassifyConfig, images: int, seed: int) -> str:
    """A hash of everything the generic trunk depends on."""
    config = asdict(classify)
    for (section, name), value in _NEWER_FIELDS.items():
        if config[section][name] == value:
            del config[section][name]
    described = {"generator": GENERATOR_VERSION, "images": images, "seed": seed, "torch": torch.__version__,
                 "classify": config}
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def generic_trunk(classify: ClassifyConfig, images: int, seed: int = 0, log=print,
                  fallback: Path | None = None) -> Path:
    """The trunk weights file of a ``classify`` model trained on ``images``
    generated pre-training images: from the cache, or trained now (resumed
    after an interruption) and cached. Where the cache cannot be written, it
    is made in ``fallback`` (a run folder) instead and the log says so. Two
    runs that need the same trunk at once take turns (a file lock): the
    second finds it made."""
    folder = _writable(cache_root() / "generic-trunks", fallback, log) / generic_trunk_key(classify, images, seed)
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder / "lock"):
        return _make_trunk(folder, classify, images, seed, log)


def generic_classifier(classify: ClassifyConfig, images: int, seed: int = 0, log=print,
                       fallback: Path | None = None) -> Path:
    """The run folder of the generic classifier whose trunk ``generic_trunk``
    keeps (made now unless cached): its fc layers too are trained, on the 44
    classes, so a detector can start from the whole model, as the papers'
    detectors start from the ImageNet classifier."""
    folder = generic_trunk(classify, images, seed, log, fallback).parent
    # Attempts run in order and stop at the first run that is kept: the kept run is the last one finished.
    finished = [run for run in _attempt_runs(folder) if (run / "model.safetensors").is_file()]
    if not finished:
        raise FileNotFoundError(f"{folder} holds a generic trunk but none of its classifier runs "
                                f"({', '.join(run.name for run in _attempt_runs(folder))})")
    return finished[-1]


def _attempt_runs(folder: Path) -> list[Path]:
    return [folder / ("run" if attempt == 0 else f"run-{attempt + 1}") for attempt in range(_ATTEMPTS)]


def _writable(root: Path, fallback: Path | None, log) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    if fallback is None:
        raise PermissionError(f"cannot write the generic trunk cache {root}: set SPPNET_CACHE to a writable folder")
    log(f"generic pre-training: {root} is not writable; the trunk is made in {fallback} (set SPPNET_CACHE to keep it)")
    return fallback


@contextmanager
def _lock(path: Path):
    """An exclusive lock on ``path`` for this process (POSIX). Under torchrun
    the ranks of one job share the stage, so none of them locks."""
    if distributed.is_distributed() or fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_trunk(folder: Path, classify: ClassifyConfig, images: int, seed: int, log) -> Path:
    from sppnet.data.pretrain_set import PRETRAIN_CLASSES, synthesize_pretrain

    trunk_file = folder / "trunk.safetensors"
    if trunk_file.is_file():
        log(f"generic pre-training: the cached trunk {trunk_file}")
        return trunk_file
    data, run = folder / "data", folder / "run"
    if not (data / "done").is_file() and distributed.is_main():
        shutil.rmtree(data, ignore_errors=True)  # a half-written set is written again
        log(f"generic pre-training: generating {images} images of shape classes in {data}")
        synthesize_pretrain(data, train=images, test=max(images // _TEST_FRACTION, 1), seed=seed)
        (data / "done").write_text("")
    distributed.barrier()
    # Too few validation images (a small test set) say too little to judge a run by.
    judged = max(images // _TEST_FRACTION, 1) >= _JUDGED_PER_CLASS * len(PRETRAIN_CLASSES)
    for attempt, run in enumerate(_attempt_runs(folder)):
        config = classify if attempt == 0 else replace(
            classify, train=replace(classify.train, seed=classify.train.seed + attempt))
        if not (run / "model.safetensors").is_file():
            resume = (run / "checkpoint.safetensors").is_file()
            log(f"generic pre-training: training the trunk ({config.train.epochs} epochs) in {run}"
                + (" (resumed)" if resume else ""))
            train_classifier(config, data, run, resume=resume, progress=False,
                             log=lambda message: log(f"  generic: {message}"))
        distributed.barrier()  # rank 0 has written the run's metrics
        error, chance = final_error(run)
        if error < chance - _BELOW_CHANCE or not judged:
            break
        log(f"generic pre-training: the run in {run} ended at chance (validation error {error:.3f}, chance "
            f"{chance:.3f}): it never left the plateau of uniform outputs"
            + (f"; training again from another random start (train.seed + {attempt + 1})"
               if attempt + 1 < _ATTEMPTS else ""))
    else:
        raise RuntimeError(f"generic pre-training: {_ATTEMPTS} runs in {folder} ended at chance; no trunk was kept "
                           "(set pretrain.generic_images=0 to pre-train from random weights)")
    if distributed.is_main():
        model, _, _ = load_classifier(run)
        save_weights(trunk_file, model.trunk.state_dict())  # atomic; written last: it marks the trunk done
    distributed.barrier()
    return trunk_file


def final_error(run: Path) -> tuple[float, float]:
    """A finished classifier run's last validation top-1 error (``metrics.csv``)
    and the error of chance, 1 - 1 / classes."""
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    classes = len((run / "classes.txt").read_text().split())
    return float(rows[-1]["val_top1_error"]), 1.0 - 1.0 / classes
