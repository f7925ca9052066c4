"""Reading images: one function, every fault turned into a clear error.

``load_image(path)`` returns an ``np.ndarray[H, W, 3]`` uint8 RGB array, with
EXIF orientation applied (so boxes drawn on the displayed image line up),
grayscale and palette images expanded to RGB, alpha dropped, and 16-bit
images scaled to 8 bits. Unreadable, truncated or oversized files raise
``ImageError`` (a ``ValueError``) naming the file.

``image_size(path)`` reads the header only; ``checked_image_size(path)``
also makes sure the file is whole (a truncated body is found when the image
list is read, not midway through a run).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "load_image", "image_size", "checked_image_size", "MAX_PIXELS"]

# Larger images are refused before they are decoded (decompression bombs).
MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


def _open(path: Path, max_pixels: int) -> Image.Image:
    try:
        empty = path.stat().st_size == 0
    except (OSError, ValueError):  # Image.open below says what is wrong
        empty = False
    if empty:
        raise ImageError(f"{path}: not a readable image (empty file, 0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    # PIL's header parsers also raise ValueError (a truncated PNG IHDR chunk,
    # invalid TIFF dimensions) and SyntaxError for malformed headers.
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            ValueError, SyntaxError) as error:
        raise ImageError(f"{path}: not a readable image ({error})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{path}: image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageError(f"{path}: {width} x {height} pixels is more than the limit of {max_pixels} (decompression bomb?)")
    return image


def image_size(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) as displayed (after EXIF rotation), read from the header only."""
    path = Path(path)
    with _open(path, max_pixels) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:  # a broken EXIF block is not worth refusing the image for
            orientation = 1
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


# The bytes a complete file of these formats ends with (JPEG's EOI marker, PNG's IEND chunk).
_END_MARKERS = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _ends_with(path: Path, marker: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            if handle.tell() < len(marker):
                return False
            handle.seek(-len(marker), 2)
            return handle.read() == marker
    except OSError:
        return False


def checked_image_size(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``image_size`` after checking that the file is whole.

    A JPEG or PNG file that ends with its end marker (JPEG's EOI, PNG's IEND
    chunk) is taken as whole: reading its last bytes costs next to nothing.
    Any other file, and one that does not end so (a truncated file, or a
    complete one with trailing bytes), is decoded in full, so a file that
    cannot be decoded raises ``ImageError`` here.
    """
    path = Path(path)
    with _open(path, max_pixels) as image:
        marker = _END_MARKERS.get(image.format or "")
    if marker is None or not _ends_with(path, marker):
        load_image(path, max_pixels)
    return image_size(path, max_pixels)


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` into ``np.ndarray[H, W, 3]`` uint8 RGB."""
    path = Path(path)
    with _open(path, max_pixels) as image:
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(f"{path}: cannot decode image ({error})") from None
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.uint32)
            peak = 65535 if image.mode.startswith("I;16") else max(int(array.max()), 1)
            gray = (array.astype(np.float64) * (255.0 / peak)).round().clip(0, 255).astype(np.uint8)
            return np.repeat(gray[:, :, None], 3, axis=2)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8).copy()
