import hashlib

from sppnet.data.folder import read_image_folder
from sppnet.data.images import load_image
from sppnet.data.shapes import SHAPE_CLASSES
from sppnet.data.synthetic import DetectionSynthConfig, synthesize_classification, synthesize_detection
from sppnet.data.voc import read_voc


def digest(root):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()


def test_detection_set_is_valid_voc_and_deterministic(tmp_path):
    config = DetectionSynthConfig(train=12, test=4, seed=3)
    counts = synthesize_detection(tmp_path / "1" / "set", config)
    synthesize_detection(tmp_path / "2" / "set", config)
    assert digest(tmp_path / "1" / "set") == digest(tmp_path / "2" / "set")
    train = read_voc(tmp_path / "1" / "set", "train", classes=SHAPE_CLASSES)
    test = read_voc(tmp_path / "1" / "set", "test", classes=SHAPE_CLASSES)
    assert (len(train), len(test)) == (12, 4) and train.skipped == [] and test.skipped == []
    objects = sum(r.num_objects for r in train.images + test.images)
    assert objects == counts["objects"] and counts["difficult"] > 0
    sides = []
    for record in train.images:
        image = load_image(record.image_path)
        assert image.shape[:2] == (record.height, record.width)
        assert (record.boxes[:, 2:] > record.boxes[:, :2]).all()
        assert (record.boxes[:, 2] <= record.width).all() and (record.boxes[:, 3] <= record.height).all()
        sides += (record.boxes[:, 2:] - record.boxes[:, :2]).min(1).values.tolist()
    assert min(sides) < 24 and max(sides) > 120  # widely varying scales


def test_classification_set_has_variable_sizes(tmp_path):
    synthesize_classification(tmp_path, train=12, test=8, seed=1)
    data = read_image_folder(tmp_path, "train")
    assert data.classes == tuple(sorted(SHAPE_CLASSES)) and len(data) == 12
    sizes = {load_image(path).shape[:2] for path, _ in data.samples}
    assert len(sizes) > 6


def test_a_folder_of_other_classes_is_refused_with_both_class_lists(tmp_path):
    import pytest

    synthesize_classification(tmp_path, train=0, test=4, seed=0, min_side=32, max_side=40)
    with pytest.raises(ValueError, match=r"no images of the classes star, ring; its class folders are cross, ellipse"):
        read_image_folder(tmp_path, "test", ["star", "ring"])
    with pytest.raises(ValueError, match=r"has no images$"):
        (tmp_path / "empty" / "cls").mkdir(parents=True)
        read_image_folder(tmp_path, "empty")
