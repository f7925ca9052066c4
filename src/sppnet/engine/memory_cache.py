"""Tensors a training run reads at every iteration (decoded images, proposal
boxes, pooled windows), kept in memory within a byte budget instead of read
or computed again each time."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

__all__ = ["MemoryCache", "TRAINING_IMAGE_BYTES", "TRAINING_POOLED_BYTES", "TRAINING_PROPOSAL_BYTES"]

# A fine-tuning step draws a few training images: decoding one (~2 ms for a 400 x 250
# JPEG) and reading its proposals from the cache (~1.2 ms: the image file's hash, the
# entry's checksum) was ~8% of a Fast R-CNN step and ~12% of an R-CNN step. 300 images
# of ~400 x 300 are ~1.4 MB each as float32 and ~8 kB of boxes each.
TRAINING_IMAGE_BYTES = 1 << 30
TRAINING_PROPOSAL_BYTES = 256 << 20
# SPP-net's fine-tuning pools windows of 8 images per step (with hard mining, every
# labelled window) from frozen maps; every labelled window's vector (float16) of 300
# images and their mirrors, at ~230 windows each and 3,200 values (the tiny trunk),
# is ~0.9 GB.
TRAINING_POOLED_BYTES = 1 << 30


class MemoryCache:
    """``load(key)``, kept once loaded; the least recently used values are
    dropped while the kept ones would hold more than ``max_bytes``, and a
    value larger than the whole budget is returned without being kept. A
    value read from here is shared: it must not be changed in place. An
    error from ``load`` propagates and nothing is kept."""

    def __init__(self, load: Callable[[Hashable], torch.Tensor], max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.load = load
        self.max_bytes = max_bytes
        self.kept: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def __call__(self, key: Hashable) -> torch.Tensor:
        value = self.kept.get(key)
        if value is not None:
            self.kept.move_to_end(key)
            return value
        value = self.load(key)
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return value
        while self.bytes + size > self.max_bytes:
            _, dropped = self.kept.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()
        self.kept[key] = value
        self.bytes += size
        return value
