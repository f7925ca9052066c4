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

import torch
from torch import nn

from sppnet.ops.geometry import FeatureGeometry, feature_geometry

__all__ = ["ZF5"]


def _lrn() -> nn.LocalResponseNorm:
    # Caffe's LRN: local_size 5 (ZF used 3; AlexNet's setting is the common one), alpha 1e-4, beta 0.75.
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


class ZF5(nn.Module):
    """ZF-5 conv trunk: ``forward(images) -> conv5 maps``."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = width
        c1, c2, c3, c4, c5 = (max(1, round(c * width)) for c in (96, 256, 384, 384, 256))
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 7, stride=2, padding=1), nn.ReLU(inplace=True), _lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(c1, c2, 5, stride=2), nn.ReLU(inplace=True), _lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.out_channels = c5
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                # He initialisation: trains from scratch in minutes where the
                # paper's N(0, 0.01) needs days and pretrained neighbours.
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.geometry: FeatureGeometry = feature_geometry(self.features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def extra_repr(self) -> str:
        g = self.geometry
        return f"width={self.width}, out_channels={self.out_channels}, stride={g.stride}, offset={g.offset}"
