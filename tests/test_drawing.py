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


def test_captions_are_dark_on_light_colours_and_light_on_dark():
    from sppnet.drawing import _text_colour

    assert _text_colour("#ffffff") == "#000000" and _text_colour("#000000") == "#ffffff"
    assert _text_colour("#46f0f0") == "#000000"  # turquoise: black text
    assert _text_colour("#000075") == "#ffffff"  # navy: white text


def test_caption_patch_is_filled_with_the_box_colour():
    image = np.full((60, 120, 3), 128, np.uint8)
    classes = tuple(f"c{i}" for i in range(18))
    out = draw_detections(image, torch.tensor([[10.0, 10.0, 110.0, 50.0]]), torch.tensor([17]), classes,
                          torch.tensor([0.75]))
    patch = out[:, 14:24, 10:44].reshape(3, -1)  # the caption's patch, inside the box's top-left corner
    navy = torch.tensor([0x00, 0x00, 0x75]).view(3, 1)  # the palette's colour for class 17
    is_navy = (patch == navy).all(0)
    # White text anti-aliased onto navy: every channel between navy's and 255, some pixels near white.
    is_text = ~is_navy & (patch >= navy).all(0)
    assert 0.4 < is_navy.float().mean() < 0.95 and (patch.min(0).values > 200).any()
    assert (is_navy | is_text).all()  # nothing else: no grey image shows through the patch
