"""kill -9 at random moments, then --resume: the final weights are
bit-identical to an uninterrupted run's (issue 8).

Each run is a real ``sppnet train`` subprocess. The interrupted one is killed
with SIGKILL at moments drawn from a seeded generator (whatever it is doing
then: decoding, computing proposals or conv5 maps, fine-tuning, mining SVM
negatives, writing a file), restarted with ``--resume`` each time, and
finally left to finish. Every weight file of the two runs must then be equal bit for bit.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sppnet.data.synthetic import synthesize_classification
from sppnet.engine.checkpoint import load_weights

TINY_CLASSIFIER = {
    "model": {"backbone": "zf5", "width": 0.125, "hidden": 32, "dropout": 0.5},
    "train": {"epochs": 8, "batch_size": 8, "resize": 72, "crop": 64, "multi_size": True, "second_size": 48,
              "optimizer": "sgd", "lr": 0.01, "lr_steps": [6], "val_split": "test", "seed": 3},
}
SPPNET = ["scales=[160]", "train_scales=null", "proposals=grid", "max_proposals=100", "finetune.iterations=40",
          "finetune.lr_steps=[30]", "finetune.batch_size=32", "finetune.images_per_batch=4", "finetune.checkpoint_every=4"]
FAST_RCNN = ["scales=[160]", "train_scales=null", "proposals=grid", "max_proposals=100", "train.iterations=30",
             "train.lr_steps=[20]", "train.checkpoint_every=3"]


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "sppnet", *args]


def _run(args: list[str], log: Path) -> None:
    with open(log, "a") as out:
        subprocess.run(_command(args), stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _run_with_kills(args: list[str], kills: int, seed: int, log: Path, max_sleep: float = 1.5) -> int:
    """Start the run and SIGKILL it ``kills`` times, each after a random one
    of its first lines of output (progress lines mark the stages: the kill
    lands in the stage that follows), restarting with ``--resume``; then let
    it finish. Returns how many kills hit a live process. The first kill
    comes as the line is read, while the run still has lines to print, so it
    always hits, however fast the machine; the later ones a random 0 to
    ``max_sleep`` seconds after their line, anywhere in the stage (on a fast
    machine they may come after the run has ended and miss)."""
    draw = random.Random(seed)
    hits = 0
    for attempt in range(kills + 1):
        command = _command(args + (["--resume"] if attempt else []))
        with open(log, "a") as out:
            out.write(f"\n=== attempt {attempt}: {' '.join(command)}\n")
            out.flush()
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
            kill_after = draw.randint(1, 4) if attempt < kills else None
            for number, line in enumerate(process.stdout, 1):
                out.write(line)
                if number == kill_after:
                    pause = draw.uniform(0.0, max_sleep)
                    time.sleep(pause if attempt else 0.0)
                    if process.poll() is None:
                        os.kill(process.pid, signal.SIGKILL)
                        hits += 1
                        out.write("=== killed (SIGKILL) ===\n")
                    break
            process.stdout.close()
            process.wait(timeout=900)
        if process.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"run failed (exit {process.returncode}), see {log}:\n{log.read_text()[-3000:]}")
        if process.returncode == 0:
            return hits
    raise AssertionError(f"the last attempt was killed, see {log}")


def _assert_same_weights(a: Path, b: Path, log: Path) -> None:
    first, second = load_weights(a), load_weights(b)
    assert first.keys() == second.keys(), a.name
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{a.name}: {different} differ after kill -9 and resume; log:\n{log.read_text()[-3000:]}"


def _no_temp_files(run: Path) -> None:
    leftovers = [p for p in run.rglob("*.tmp")]
    assert not leftovers, leftovers


def _classifier_args(data: Path, config: Path, out: Path) -> list[str]:
    return ["train", "classify", "--data", str(data), "--out", str(out), "--config", str(config), "--no-progress"]


@pytest.fixture(scope="module")
def classifier_straight(tmp_path_factory):
    """The data, the config and the uninterrupted run both seeds compare with
    (made once: both seeds run in one xdist worker)."""
    root = tmp_path_factory.mktemp("classifier-straight")
    data, config = root / "data", root / "tiny.yaml"
    synthesize_classification(data, train=24, test=8, seed=0, min_side=64, max_side=100)
    config.write_text(yaml.safe_dump(TINY_CLASSIFIER))
    _run(_classifier_args(data, config, root / "run"), root / "log.txt")
    return data, config, root / "run"


# Both seeds of a test in one xdist worker (scripts/test.sh runs --dist loadgroup), so that
# the module's uninterrupted run is made once, not once per worker.
@pytest.mark.xdist_group("kill-resume-classifier")
@pytest.mark.parametrize("seed", [0, 1])
def test_classifier_killed_at_random_moments_resumes_bit_identical(classifier_straight, tmp_path, seed):
    data, config, straight = classifier_straight
    log = tmp_path / "log.txt"
    # An epoch takes ~0.1 s on an idle 2-core machine: the second kill, up to 0.1 s after one of
    # the first four epoch lines, lands inside the next epochs (1.5 s outran the whole run).
    hits = _run_with_kills(_classifier_args(data, config, tmp_path / "killed"), kills=2, seed=seed, log=log,
                           max_sleep=0.1)
    assert hits >= 1
    _assert_same_weights(straight / "model.safetensors", tmp_path / "killed" / "model.safetensors", log)
    _no_temp_files(tmp_path / "killed")


def _fresh_copy(data: Path, out: Path) -> Path:
    """The dataset without its proposal cache, so that each run computes its own."""
    shutil.copytree(data, out, ignore=shutil.ignore_patterns("proposals"))
    return out


def _sppnet_args(data: Path, out: Path, backbone: Path) -> list[str]:
    return ["train", "detect", "--method", "sppnet", "--data", str(data), "--out", str(out), "--backbone", str(backbone),
            *[a for item in SPPNET for a in ("--set", item)]]


@pytest.fixture(scope="module")
def sppnet_straight(detection_backbone, tmp_path_factory):
    data, backbone = detection_backbone
    root = tmp_path_factory.mktemp("sppnet-straight")
    _run(_sppnet_args(_fresh_copy(data, root / "data"), root / "run", backbone), root / "log.txt")
    return root / "run"


@pytest.mark.xdist_group("kill-resume-sppnet")
@pytest.mark.parametrize("seed", [0, 1])
def test_sppnet_every_stage_killed_resumes_bit_identical(detection_backbone, sppnet_straight, tmp_path, seed):
    """Kills land in proposals, the conv5 cache, fine-tuning (checkpoints every
    4 iterations), SVM mining and box regression."""
    data, backbone = detection_backbone
    log, killed = tmp_path / "log.txt", tmp_path / "killed"
    hits = _run_with_kills(_sppnet_args(_fresh_copy(data, tmp_path / "data"), killed, backbone), kills=3, seed=seed,
                           log=log)
    assert hits >= 1
    for name in ("finetune.safetensors", "svm.safetensors", "bbox.safetensors"):
        _assert_same_weights(sppnet_straight / name, killed / name, log)
    _no_temp_files(killed)
    assert not (killed / "finetune-checkpoint.safetensors").exists()


def test_fast_rcnn_killed_at_random_moments_resumes_bit_identical(detection_backbone, tmp_path):
    data, backbone = detection_backbone
    log = tmp_path / "log.txt"

    def args(out):
        return ["train", "detect", "--method", "fast-rcnn", "--data", str(data), "--out", str(out),
                "--backbone", str(backbone), *[a for item in FAST_RCNN for a in ("--set", item)]]

    _run(args(tmp_path / "straight"), log)
    hits = _run_with_kills(args(tmp_path / "killed"), kills=2, seed=2, log=log)
    assert hits >= 1
    _assert_same_weights(tmp_path / "straight" / "model.safetensors", tmp_path / "killed" / "model.safetensors", log)
    _no_temp_files(tmp_path / "killed")
