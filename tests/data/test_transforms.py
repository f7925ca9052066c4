import numpy as np
import pytest
import torch

from sppnet.data.transforms import (
    center_box, multi_view_boxes, random_crop, resize_min_side, ten_view_boxes, to_tensor,
)


def test_resize_keeps_aspect_and_crops_are_deterministic_per_generator():
    image = to_tensor(np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8))
    assert resize_min_side(image, 50).shape == (3, 50, 75)
    a = random_crop(image, 64, True, torch.Generator().manual_seed(1))
    b = random_crop(image, 64, True, torch.Generator().manual_seed(1))
    assert a.shape == (3, 64, 64) and torch.equal(a, b)
    assert random_crop(image[:, :40, :40], 64, False).shape == (3, 64, 64)  # small images are enlarged


def test_view_boxes_hand_worked():
    assert center_box(256, 300, 224).tolist() == [[38.0, 16.0, 262.0, 240.0]]
    assert ten_view_boxes(256, 300, 224).tolist() == [
        [0, 0, 224, 224], [76, 0, 300, 224], [0, 32, 224, 256], [76, 32, 300, 256], [38, 16, 262, 240]]
    assert multi_view_boxes(256, 300, 224).shape == (9, 4)
    assert multi_view_boxes(224, 300, 224).tolist() == [[0, 0, 224, 224], [38, 0, 262, 224], [76, 0, 300, 224]]
    with pytest.raises(ValueError, match="smaller than"):
        ten_view_boxes(200, 300, 224)


def test_to_tensor_takes_read_only_arrays_without_a_warning():
    import warnings

    import numpy as np

    from sppnet.data.transforms import to_tensor

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    image.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_tensor(image, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert torch.equal(out, torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255)
