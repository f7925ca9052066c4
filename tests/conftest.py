import pytest

from sppnet.data.datasets import open_detection_dataset
from sppnet.data.synthetic import DetectionSynthConfig, synthesize_detection
from sppnet.engine.pretrain import PretrainConfig, pretrain_backbone
from tests.learning import LEARNING_SEED


@pytest.fixture(scope="session")
def detection_backbone(tmp_path_factory):
    """A small generated detection set and a trunk pre-trained on its crops,
    shared by the detector tests: ``(data folder, classifier run)``."""
    root = tmp_path_factory.mktemp("detection")
    data = root / "data"
    synthesize_detection(data, DetectionSynthConfig(train=30, test=10, seed=1 + LEARNING_SEED, min_side=160, max_side=240))
    train = open_detection_dataset(data, "train")
    backbone = pretrain_backbone(PretrainConfig(epochs=25, background_per_image=3), train, root / "run", None, LEARNING_SEED,
                                 log=lambda message: None)
    return data, backbone
