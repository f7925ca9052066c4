"""Generated images of simple shapes at any size, for offline demos and tests.

Each image is a textured background with one filled shape (a class) of random
colour, size, aspect ratio and position. Images are ``Tensor[3, H, W]`` in
[0, 1]; the same seed always gives the same images.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SHAPE_CLASSES", "background", "render_shape_image", "shape_mask"]

SHAPE_CLASSES = ("ellipse", "rectangle", "triangle", "cross")


def background(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A textured ``Tensor[3, height, width]`` background in [0, 1]."""
    # Low-frequency colour noise plus stripes: enough texture that a shape is
    # not just "the non-constant region".
    coarse = torch.rand(3, max(2, height // 16), max(2, width // 16), generator=generator)
    base = torch.nn.functional.interpolate(coarse[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    angle = torch.rand(1, generator=generator).item() * math.pi
    freq = 0.1 + 0.3 * torch.rand(1, generator=generator).item()
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    stripes = 0.5 + 0.5 * torch.sin(freq * (xs * math.cos(angle) + ys * math.sin(angle)))
    return 0.25 + 0.35 * base + 0.15 * stripes


def shape_mask(kind: str, height: int, width: int, cx: float, cy: float, half_w: float, half_h: float) -> torch.Tensor:
    """``BoolTensor[height, width]``: pixels whose centres fall inside shape
    ``kind`` inscribed in the box centred on (cx, cy) with half-sizes
    (half_w, half_h), in continuous pixel coordinates. Parts outside the
    canvas are cut off."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    u, v = (xs - cx) / half_w, (ys - cy) / half_h  # the shape's box is [-1, 1]^2
    if kind == "ellipse":
        return u * u + v * v <= 1
    if kind == "rectangle":
        return (u.abs() <= 1) & (v.abs() <= 1)
    if kind == "triangle":
        return (v <= 1) & (v >= -1) & (u.abs() <= (v + 1) / 2)
    if kind == "cross":
        return ((u.abs() <= 0.3) & (v.abs() <= 1)) | ((v.abs() <= 0.3) & (u.abs() <= 1))
    raise ValueError(f"unknown shape {kind!r}; choose one of {SHAPE_CLASSES}")


def _random_mask(kind: str, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    side = min(height, width)
    size = side * (0.35 + 0.45 * torch.rand(1, generator=generator).item())
    aspect = math.exp((torch.rand(1, generator=generator).item() - 0.5) * 0.8)
    half_w, half_h = size * aspect / 2, size / aspect / 2
    half_w, half_h = min(half_w, width / 2 - 1), min(half_h, height / 2 - 1)
    cx = half_w + torch.rand(1, generator=generator).item() * (width - 2 * half_w)
    cy = half_h + torch.rand(1, generator=generator).item() * (height - 2 * half_h)
    return shape_mask(kind, height, width, cx, cy, half_w, half_h)


def render_shape_image(label: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """One ``Tensor[3, height, width]`` image showing shape ``SHAPE_CLASSES[label]``."""
    if not 0 <= label < len(SHAPE_CLASSES):
        raise ValueError(f"label must be in [0, {len(SHAPE_CLASSES)}), got {label}")
    if height < 8 or width < 8:
        raise ValueError(f"shape images need at least 8 x 8 pixels, got {height} x {width}")
    image = background(height, width, generator)
    colour = torch.rand(3, 1, 1, generator=generator)
    mask = _random_mask(SHAPE_CLASSES[label], height, width, generator)
    return torch.where(mask, colour.expand(3, height, width), image).clamp(0, 1)

