import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.drawing import draw_detections, save_detection_drawing


def test_draws_only_boxes_above_threshold(tmp_path):
    image = np.zeros((50, 80, 3), np.uint8)
    boxes = torch.tensor([[5.0, 5.0, 30.0, 40.0], [40.0, 10.0, 75.0, 45.0]])
    out = draw_detections(image, boxes, torch.tensor([1, 2]), ("bg", "cat", "dog"), torch.tensor([0.9, 0.1]), 0.5)
    assert out.shape == (3, 50, 80) and out.dtype == torch.uint8
    assert out[:, 5, 5:30].any() and not out[:, 44, 41:74].any()  # the second box is below threshold
    Image.fromarray(image).save(tmp_path / "in.png")
    path = save_detection_drawing(tmp_path / "in.png", tmp_path / "out" / "d.png", boxes=boxes,
                                  labels=torch.tensor([1, 2]), classes=("bg", "cat", "dog"))
    assert np.asarray(Image.open(path)).shape == (50, 80, 3)


def test_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(torch.zeros(3, 4, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), ("bg",))
