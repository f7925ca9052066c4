"""Image transforms and test-time views for classification.

Images enter as ``np.ndarray[H, W, 3]`` uint8 RGB (``load_image``) and leave
as normalised ``Tensor[3, H, W]`` float32. View boxes are xyxy, 0-based
continuous pixels of the (resized) image, the package's box convention.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "IMAGENET_MEAN",
    "normalise",
    "IMAGENET_STD",
    "to_tensor",
    "resize_min_side",
    "random_crop",
    "random_scaled_crop",
    "colour_jitter",
    "random_right_angle",
    "random_channel_order",
    "random_erasing",
    "center_box",
    "ten_view_boxes",
    "multi_view_boxes",
    "crop",
    "scale_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> normalised float ``[3, H, W]``."""
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # e.g. np.asarray(PIL image): torch.from_numpy warns on read-only memory
        image = image.copy()
    return normalise(torch.from_numpy(image).permute(2, 0, 1).float().div_(255), mean, std)


def normalise(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """A float ``[3, H, W]`` image in [0, 1] (the detection models' input)
    -> ``(image - mean) / std`` per channel, on the image's device: what
    ``to_tensor`` gives for the same pixels, to the bit."""
    mean = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - mean) / std


def resize_min_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[3, H, W]`` so that min(H, W) = size, keeping the aspect ratio."""
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    new = (max(1, round(height * scale)), max(1, round(width * scale)))
    if new == (height, width):
        return image
    return F.interpolate(image[None], size=new, mode="bilinear", align_corners=False, antialias=True)[0]


def random_crop(image: torch.Tensor, size: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``size`` x ``size`` crop (images smaller than ``size`` are
    resized up first), mirrored with probability 1/2 when ``flip``."""
    if min(image.shape[-2:]) < size:
        image = resize_min_side(image, size)
    height, width = image.shape[-2:]
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    out = image[:, top : top + size, left : left + size]
    if flip and torch.rand(1, generator=generator).item() < 0.5:
        out = out.flip(-1)
    return out


def _random_window(height: int, width: int, area: tuple[float, float], max_aspect: float,
                   generator: torch.Generator | None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random window of an image: its area a
    fraction in ``area`` of the image's (uniform), its aspect ratio (width /
    height) in [1 / max_aspect, max_aspect] (log-uniform), clipped to the image."""
    low, high = area
    fraction = low + (high - low) * float(torch.rand(1, generator=generator))
    aspect = max_aspect ** (2 * float(torch.rand(1, generator=generator)) - 1)
    window_width = min(width, max(1, round((fraction * height * width * aspect) ** 0.5)))
    window_height = min(height, max(1, round((fraction * height * width / aspect) ** 0.5)))
    top = int(torch.randint(0, height - window_height + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - window_width + 1, (1,), generator=generator))
    return top, left, window_height, window_width


def random_scaled_crop(image: torch.Tensor, size: int, area: tuple[float, float], flip: bool,
                       generator: torch.Generator | None = None, max_aspect: float = 4 / 3) -> torch.Tensor:
    """Scale augmentation: a random window covering a fraction in ``area`` of
    the image (uniform) with aspect ratio in [1 / max_aspect, max_aspect]
    (log-uniform), clipped to the image, resized to ``size`` x ``size`` and
    mirrored with probability 1/2 when ``flip``. ``area = (1, 1)`` with
    ``max_aspect = 1`` gives the largest centred-anywhere square."""
    low, high = area
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop area must satisfy 0 < min <= max <= 1, got {area}")
    top, left, crop_height, crop_width = _random_window(*image.shape[-2:], area, max_aspect, generator)
    out = image[:, top: top + crop_height, left: left + crop_width]
    out = F.interpolate(out[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    if flip and torch.rand(1, generator=generator).item() < 0.5:
        out = out.flip(-1)
    return out


def colour_jitter(image: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Colour augmentation of a normalised ``[3, H, W]`` image: each channel
    scaled by a factor in [1 - strength, 1 + strength] and shifted by up to
    ``strength`` standard deviations (Krizhevsky et al. alter the RGB
    intensities in the same spirit, along the principal components)."""
    if strength <= 0:
        return image
    draws = torch.rand(2, 3, 1, 1, generator=generator) * 2 - 1
    return image * (1 + strength * draws[0]) + strength * draws[1]


def random_right_angle(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``image`` turned by 0, 90, 180 or 270 degrees (uniform); with a random
    mirror this draws from all eight symmetries of the square. Exact (no
    resampling), for objects with no up, such as shapes seen from above."""
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    return image.rot90(turns, dims=(-2, -1)) if turns else image


def random_erasing(image: torch.Tensor, probability: float, generator: torch.Generator | None = None,
                   area: tuple[float, float] = (0.02, 0.33), max_aspect: float = 10 / 3) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): with ``probability``, one rectangle
    of ``area`` (a fraction of the image's) and aspect ratio between
    1 / ``max_aspect`` and ``max_aspect`` (log-uniform) is replaced by noise
    drawn from the normalised pixels' distribution (standard normal). The
    net cannot rest on any one part of an object; it learns the rest too.
    A rectangle that does not fit is shrunk to the image. ``[3, H, W]`` in and out."""
    if probability <= 0 or float(torch.rand(1, generator=generator)) >= probability:
        return image
    top, left, erase_height, erase_width = _random_window(*image.shape[-2:], area, max_aspect, generator)
    out = image.clone()
    out[:, top:top + erase_height, left:left + erase_width] = torch.randn(
        image.shape[0], erase_height, erase_width, generator=generator, dtype=image.dtype)
    return out


def random_channel_order(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``image``'s colour channels (``[..., 3, H, W]``: one image or a batch,
    all in the same order) in a random order (uniform over the six), for
    classes whose colour says nothing about what they are."""
    return image[..., torch.randperm(3, generator=generator), :, :]


def crop(image: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """The pixels of integer box (x1, y1, x2, y2) of ``[3, H, W]``."""
    x1, y1, x2, y2 = (int(v) for v in box.round().tolist())
    return image[:, y1:y2, x1:x2]


def center_box(height: int, width: int, size: int) -> torch.Tensor:
    """``Tensor[1, 4]``: the centred size x size window."""
    top, left = (height - size) // 2, (width - size) // 2
    return torch.tensor([[left, top, left + size, top + size]], dtype=torch.float32)


def _grid_boxes(height: int, width: int, size: int, rows: tuple[int, ...], cols: tuple[int, ...]) -> torch.Tensor:
    boxes = [[c, r, c + size, r + size] for r in rows for c in cols]
    return torch.tensor(boxes, dtype=torch.float32)


def ten_view_boxes(height: int, width: int, size: int) -> torch.Tensor:
    """``Tensor[5, 4]``: the four corners and the centre (the standard 10-view
    adds the mirror of each)."""
    if min(height, width) < size:
        raise ValueError(f"a {height} x {width} image is smaller than the {size} view")
    corners = _grid_boxes(height, width, size, (0, height - size), (0, width - size))
    return torch.cat([corners, center_box(height, width, size)])


def multi_view_boxes(height: int, width: int, size: int) -> torch.Tensor:
    """SPP-net's multi-view boxes at one scale: centre, four corners and the
    middles of the four sides (9 windows); when the shorter side equals the
    view size, the windows that differ along the longer side only (3). With
    mirroring this gives the paper's 18 views (6 at the smallest scale).
    Duplicate windows (a square image) are kept once."""
    if min(height, width) < size:
        raise ValueError(f"a {height} x {width} image is smaller than the {size} view")
    rows = sorted({0, (height - size) // 2, height - size})
    cols = sorted({0, (width - size) // 2, width - size})
    return _grid_boxes(height, width, size, tuple(rows), tuple(cols))


def scale_image(image: torch.Tensor, min_side: int, max_side: int | None = None) -> tuple[torch.Tensor, float]:
    """The one image -> network-input step of the detectors (SPEC sections 3
    and 6): resize ``[3, H, W]`` so that its shorter side is ``min_side``,
    unless that makes the longer side exceed ``max_side``, in which case the
    longer side becomes ``max_side``. Returns the image and the factor that
    maps original pixel coordinates to the resized image's."""
    height, width = image.shape[-2:]
    factor = min_side / min(height, width)
    if max_side is not None and factor * max(height, width) > max_side:
        factor = max_side / max(height, width)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    if size != (height, width):
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return image, factor
