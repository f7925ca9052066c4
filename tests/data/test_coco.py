import json

import numpy as np
import pytest
from PIL import Image

from sppnet.data.coco import read_coco
from sppnet.data.records import BACKGROUND


def test_reads_coco_json_and_reports_bad_annotations(tmp_path):
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "a.jpg")
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 60, "height": 40},
                   {"id": 8, "file_name": "missing.jpg", "width": 60, "height": 40}],
        "categories": [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10.5, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 60, 40], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [1, 1, 0, 5]},
            {"id": 4, "image_id": 7, "category_id": 99, "bbox": [1, 1, 5, 5]},
            {"id": 5, "image_id": 42, "category_id": 1, "bbox": [1, 1, 5, 5]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    dataset = read_coco(path, tmp_path)
    assert dataset.classes == (BACKGROUND, "cat", "dog")  # sorted by category id
    (record,) = dataset.images
    assert record.boxes.tolist() == [[10.5, 5.0, 30.5, 15.0], [0.0, 0.0, 60.0, 40.0]]
    assert record.labels.tolist() == [2, 1] and record.difficult.tolist() == [False, True]
    reasons = " | ".join(str(s) for s in dataset.skipped)
    assert "empty or invalid box" in reasons and "unknown category_id 99" in reasons
    assert "unknown image_id 42" in reasons and "missing.jpg" in reasons


def test_bad_coco_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_coco(tmp_path / "nope.json", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_coco(tmp_path / "bad.json", tmp_path)
    (tmp_path / "shape.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="needs lists"):
        read_coco(tmp_path / "shape.json", tmp_path)


def test_file_names_cannot_leave_the_image_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    outside = tmp_path / "secret.jpg"  # a real image, but not in the image folder
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(outside)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(images / "ok.jpg")
    data = {
        "images": [{"id": 1, "file_name": str(outside), "width": 60, "height": 40},
                   {"id": 2, "file_name": "../secret.jpg", "width": 60, "height": 40},
                   {"id": 3, "file_name": "ok.jpg", "width": 60, "height": 40}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in (1, 2, 3)],
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    dataset = read_coco(tmp_path / "instances.json", images)
    assert [r.image_id for r in dataset.images] == ["3"]
    assert sum("unsafe path" in str(s) for s in dataset.skipped) == 2
