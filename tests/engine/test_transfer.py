import numpy as np
import pytest

from sppnet.config import from_dict
from sppnet.data.synthetic import synthesize_classification
from sppnet.engine.classification import ClassifyConfig, train_classifier
from sppnet.engine.transfer import _class_ap, transfer


def test_class_ap_hand_worked():
    # ranked hits: 1 0 1 -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # 11-point: recall <= 0.5 -> max precision 1 (6 points), above -> 2/3 (5 points)
    ap = _class_ap(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]))
    assert ap == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert np.isnan(_class_ap(np.array([0.1]), np.array([False])))


def test_transfer_runs_on_an_image_folder(tmp_path):
    synthesize_classification(tmp_path / "data", train=24, test=12, seed=0, min_side=64, max_side=96)
    config = from_dict(ClassifyConfig, {
        "model": {"width": 0.125, "hidden": 32, "dropout": 0.0},
        "train": {"epochs": 1, "batch_size": 8, "resize": 72, "crop": 64, "optimizer": "adam", "lr": 0.001,
                  "val_split": None}})
    train_classifier(config, tmp_path / "data", tmp_path / "run", progress=False, log=lambda m: None)
    summary = transfer(tmp_path / "run", tmp_path / "data", train_per_class=4, scales=(64, 96), layer="pool")
    assert summary["train_images"] == 16 and summary["test_images"] == 12
    assert 0.0 <= summary["accuracy"] <= 1.0 and set(summary["ap"]) == {"cross", "ellipse", "rectangle", "triangle"}
