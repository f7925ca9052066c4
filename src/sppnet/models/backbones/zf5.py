"""ZF-5, the SPP-net paper's main trunk (SPEC section 8; Zeiler & Fergus' net
with the paper's changes).

Shapes: N images, 3 x H x W in, N x 256 x h x w out (h = w = 13 at 224).

conv1 96 7x7/2 pad 1, ReLU, LRN, max-pool 3/2; conv2 256 5x5/2, ReLU, LRN,
max-pool 3/2; conv3 384 3x3 pad 1; conv4 384 3x3 pad 1; conv5 256 3x3 pad 1.
Pooling rounds up (ceil mode) as Caffe's does, which gives the paper's 13 x 13
conv5 map for a 224 x 224 input; conv2 is unpadded, which puts cell 0's centre
on pixel 20 (the authors' offset0 = 21, 1-based). ``width`` scales every
layer's channels for small CPU-sized variants.
"""

from __future__ import annotations

from torch import nn

from sppnet.models.backbones.base import PaperTrunk, channels_for, lrn

__all__ = ["ZF5"]


class ZF5(PaperTrunk):
    """ZF-5 conv trunk: ``forward(images) -> conv5 maps``."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels_for(width, (96, 256, 384, 384, 256))
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 7, stride=2, padding=1), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(c1, c2, 5, stride=2), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True),
        )
        self._finish(width, c5)
