import numpy as np
import pytest
from PIL import Image

from sppnet.data.images import ImageError, image_size, load_image


def test_modes_become_rgb_uint8(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 128, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray((rgb[:, :, 1].astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    assert np.array_equal(load_image(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(load_image(tmp_path / "gray.png"), np.repeat(rgb[:, :, :1], 3, axis=2))
    assert np.array_equal(load_image(tmp_path / "rgba.png"), rgb)
    # 16-bit values v * 257 scale back to exactly v
    assert np.array_equal(load_image(tmp_path / "deep.png"), np.repeat(rgb[:, :, 1:2], 3, axis=2))


def test_exif_rotation_is_applied(tmp_path):
    array = np.zeros((10, 40, 3), np.uint8)
    array[:, :5] = 255  # a white band on the left
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.shape == (40, 10, 3) and image_size(tmp_path / "rotated.jpg") == (40, 10)
    assert loaded[:5].mean() > 200 and loaded[-5:].mean() < 50  # the band is now on top


@pytest.mark.parametrize("content, match", [(b"", "not a readable image"), (b"hello, world", "not a readable image")])
def test_unreadable_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=match) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_truncated_and_missing_and_oversized(tmp_path):
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg: cannot decode"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "ok.jpg", max_pixels=1000)
