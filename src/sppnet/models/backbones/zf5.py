"""ZF-5, the SPP-net paper's main trunk (SPEC section 8; Zeiler & Fergus' net
with the paper's changes).

Shapes: N images, 3 x H x W in, N x 256 x h x w out (h = w = 13 at 224).

conv1 96 7x7/2 pad 1, ReLU, LRN, max-pool 3/2; conv2 256 5x5/2, ReLU, LRN,
max-pool 3/2; conv3 384 3x3 pad 1; conv4 384 3x3 pad 1; conv5 256 3x3 pad 1.
Pooling rounds up (ceil mode) as Caffe's does, which gives the paper's 13 x 13
conv5 map for a 224 x 224 input; conv2 is unpadded, which puts cell 0's centre
on pixel 20 (the authors' offset0 = 21, 1-based). ``width`` scales every
layer's channels for small CPU-sized variants.

``ZF5(batch_norm=True)`` (registry name ``zf5-bn``) is a modern variant, not
the paper's net: every conv is followed by batch normalisation (conv without
bias, BN, ReLU) and the two LRN layers are dropped. Same layer shapes and
feature geometry; it trains from scratch in far fewer steps on small data.
"""

from __future__ import annotations

from torch import nn

from sppnet.models.backbones.base import PaperTrunk, channels_for, lrn

__all__ = ["ZF5"]


class ZF5(PaperTrunk):
    """ZF-5 conv trunk: ``forward(images) -> conv5 maps``."""

    def __init__(self, width: float = 1.0, batch_norm: bool = False) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels_for(width, (96, 256, 384, 384, 256))
        self.batch_norm = batch_norm
        self.features = nn.Sequential(
            *self._conv(3, c1, 7, stride=2, padding=1), *self._lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            *self._conv(c1, c2, 5, stride=2), *self._lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            *self._conv(c2, c3, 3, padding=1),
            *self._conv(c3, c4, 3, padding=1),
            *self._conv(c4, c5, 3, padding=1),
        )
        self._finish(width, c5)

    def _conv(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
        if not self.batch_norm:
            return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding), nn.ReLU(inplace=True)]
        return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    def _lrn(self) -> list[nn.Module]:
        return [] if self.batch_norm else [lrn()]

    def extra_repr(self) -> str:
        return super().extra_repr() + (", batch_norm=True" if self.batch_norm else "")
