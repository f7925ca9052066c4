import numpy as np
import pytest
import torch

from sppnet.data.transforms import (
    center_box, colour_jitter, multi_view_boxes, random_channel_order, random_crop, random_erasing, random_right_angle,
    random_scaled_crop, resize_min_side, ten_view_boxes, to_tensor,
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


def test_scaled_crop_is_a_resized_window_of_the_image():
    image = torch.arange(3 * 100 * 100, dtype=torch.float32).reshape(3, 100, 100)
    generator = torch.Generator().manual_seed(3)
    # The whole image when the window must cover all of it and be square.
    whole = random_scaled_crop(image, 40, (1.0, 1.0), False, generator, max_aspect=1.0)
    expected = torch.nn.functional.interpolate(image[None], size=(40, 40), mode="bilinear", align_corners=False,
                                               antialias=True)[0]
    assert torch.equal(whole, expected)
    # A quarter of the area, square, kept at its own size: exactly some 50 x 50 window of the image.
    for _ in range(5):
        window = random_scaled_crop(image, 50, (0.25, 0.25), False, generator, max_aspect=1.0)
        top, left = int(window[0, 0, 0]) // 100, int(window[0, 0, 0]) % 100
        assert torch.equal(window, image[:, top:top + 50, left:left + 50])
    # Mirroring flips the window; any aspect stays inside the image.
    shapes = {random_scaled_crop(image[:, :30], 16, (0.1, 1.0), True, generator).shape for _ in range(20)}
    assert shapes == {(3, 16, 16)}
    with pytest.raises(ValueError, match="crop area"):
        random_scaled_crop(image, 16, (0.5, 0.2), False, generator)


def test_colour_jitter_is_a_bounded_gain_and_shift_per_channel():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(3, 8, 9, generator=generator)
    assert colour_jitter(image, 0.0, generator) is image
    out = colour_jitter(image, 0.2, generator)
    for channel in range(3):
        x, y = image[channel].flatten(), out[channel].flatten()
        gain = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        shift = float(y.mean() - gain * x.mean())
        assert torch.allclose(y, gain * x + shift, atol=1e-5)
        assert 0.8 <= gain <= 1.2 and -0.2 <= shift <= 0.2


def test_right_angle_turns_are_exact_and_reach_all_four():
    image = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    # Hand-worked: channel 0 is [[0, 1, 2], [3, 4, 5], [6, 7, 8]]; a quarter turn
    # anticlockwise puts the top row's right end at the top left.
    quarter = torch.tensor([[2.0, 5, 8], [1, 4, 7], [0, 3, 6]])
    turns = {0: image[0], 1: quarter, 2: image[0].flip(0).flip(1), 3: quarter.flip(0).flip(1)}
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        out = random_right_angle(image, generator)
        match = [k for k, expected in turns.items() if torch.equal(out[0], expected)]
        assert len(match) == 1 and torch.equal(out[1], out[0] + 9)  # every channel turned alike
        seen.add(match[0])
    assert seen == {0, 1, 2, 3}


def test_channel_order_is_a_permutation_of_whole_channels():
    image = torch.stack([torch.full((4, 5), float(c)) for c in range(3)])
    generator = torch.Generator().manual_seed(0)
    orders = set()
    for _ in range(60):
        out = random_channel_order(image, generator)
        order = tuple(int(out[c, 0, 0]) for c in range(3))
        assert sorted(order) == [0, 1, 2] and torch.equal(out, image[list(order)])
        orders.add(order)
    assert len(orders) == 6


def test_channel_order_of_a_batch_is_one_order_for_all():
    batch = torch.stack([torch.stack([torch.full((2, 3), float(10 * n + c)) for c in range(3)]) for n in range(4)])
    out = random_channel_order(batch, torch.Generator().manual_seed(3))
    order = [int(out[0, c, 0, 0]) for c in range(3)]
    assert sorted(order) == [0, 1, 2]
    for n in range(4):
        assert torch.equal(out[n], batch[n, order])


def test_erasing_replaces_one_rectangle_within_its_area_and_aspect_bounds():
    image = torch.full((3, 40, 50), 7.0)  # no normalised pixel is 7: every erased one shows
    generator = torch.Generator().manual_seed(0)
    erased = 0
    for _ in range(200):
        out = random_erasing(image, 0.5, generator)
        changed = (out != image).any(0)
        assert torch.equal((out != image).all(0), changed)  # all three channels of an erased pixel
        if not changed.any():
            assert torch.equal(out, image)
            continue
        erased += 1
        rows, cols = changed.nonzero(as_tuple=True)
        top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        assert int(changed.sum()) == (bottom - top) * (right - left)  # one full rectangle
        area = (bottom - top) * (right - left) / (40 * 50)
        aspect = (bottom - top) / (right - left)
        # Rounding to whole pixels and shrinking to the image move the bounds a little.
        assert 0.015 <= area <= 0.36 and 1 / 3.9 <= aspect <= 3.9 or bottom - top == 40, (area, aspect)
    assert 70 <= erased <= 130  # probability 0.5 of 200
    assert torch.equal(random_erasing(image, 0.0, generator), image)
    assert (random_erasing(image, 1.0, generator) != image).any()
