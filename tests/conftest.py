import atexit
import os
import shutil
import tempfile

import pytest
import torch
from filelock import FileLock
from hypothesis import settings

from sppnet.data.datasets import open_detection_dataset
from sppnet.data.synthetic import DetectionSynthConfig, synthesize_detection
from sppnet.engine.pretrain import PretrainConfig, pretrain_backbone
from tests.learning import LEARNING_SEED

# One intra-op thread count on every machine (SPPNET_TEST_THREADS; default 2, 1 under xdist, below):
# torch's CPU kernels sum in an order that depends on it, and a few ulps of
# difference grow through SGD into different trained models. A learning test
# that gave 6.9 mAP on one machine and 11.0 on another was seeing this
# (benchmarks/learning_margins.py measures every learning test at 1 and 2).
# An xdist worker (scripts/test.sh runs two) defaults to one thread, so that the
# workers do not oversubscribe the cores.
_DEFAULT_THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
torch.set_num_threads(int(os.environ.get("SPPNET_TEST_THREADS", _DEFAULT_THREADS)))

# The generic pre-training stage (engine/generic_pretrain.py) caches its trunk
# per machine. Tests never read or fill the user's cache: a test that reached
# the presets' 9-minute stage by mistake would pass fast on a machine that has
# the trunk cached and take minutes on a clean one. Each test process gets an
# empty cache of its own (tests of the stage point SPPNET_CACHE elsewhere).
os.environ["SPPNET_CACHE"] = tempfile.mkdtemp(prefix="sppnet-test-cache-")
atexit.register(shutil.rmtree, os.environ["SPPNET_CACHE"], True)

# Property tests draw the same examples on every machine and run (a fuzz test
# that found a new case on one CI run and not the next would be a flaky test);
# no example database is written into the checkout.
settings.register_profile("sppnet", derandomize=True, database=None)
settings.load_profile("sppnet")


def _build_detection_backbone(root):
    data = root / "data"
    synthesize_detection(data, DetectionSynthConfig(train=30, test=10, seed=1 + LEARNING_SEED, min_side=160, max_side=240))
    train = open_detection_dataset(data, "train")
    backbone = pretrain_backbone(PretrainConfig(preset="classify-crops-tiny", epochs=25, background_per_image=3), train, root / "run",
                                 None, LEARNING_SEED, log=lambda message: None)
    return data, backbone


@pytest.fixture(scope="session")
def detection_backbone(tmp_path_factory):
    """A small generated detection set and a trunk pre-trained on its crops,
    shared by the detector tests: ``(data folder, classifier run)``."""
    root = tmp_path_factory.mktemp("detection")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _build_detection_backbone(root)
    # Under xdist the first worker to ask builds it (the same seeded result
    # either would) in the session's shared temporary folder, under a lock;
    # each worker then works on its own copy, since the tests write proposal
    # caches and runs into the data folder.
    shared = tmp_path_factory.getbasetemp().parent / "detection-backbone"
    done = shared.with_suffix(".done")  # holds the classifier run's path within ``shared``
    with FileLock(f"{shared}.lock"):
        if not done.is_file():
            shutil.rmtree(shared, ignore_errors=True)
            _, backbone = _build_detection_backbone(shared)
            done.write_text(str(backbone.relative_to(shared)))
    shutil.copytree(shared, root, dirs_exist_ok=True)
    return root / "data", root / done.read_text()
