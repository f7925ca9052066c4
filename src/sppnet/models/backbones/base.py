"""Shared plumbing of the paper's conv trunks (ZF-5, Convnet*-5, Overfeat-5/7)."""

from __future__ import annotations

import torch
from torch import nn

from sppnet.ops.geometry import FeatureGeometry, feature_geometry
from sppnet.ops.lrn import LocalResponseNorm

__all__ = ["PaperTrunk", "channels_for", "lrn"]


def lrn() -> LocalResponseNorm:
    # Caffe's LRN as in Krizhevsky's net: local_size 5, alpha 1e-4, beta 0.75.
    # sppnet's LRN is torch's layer (same state dict, an nn.LocalResponseNorm)
    # with numba kernels on CPU in eager mode; exported graphs get torch's ops.
    return LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


def channels_for(width: float, channels: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return tuple(max(1, round(c * width)) for c in channels)


def _he_init(features: nn.Sequential) -> None:
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            # He initialisation, as for ZF-5: trains from scratch where the
            # paper's N(0, 0.01) needs pretrained neighbours.
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class PaperTrunk(nn.Module):
    """Shared plumbing: ``features``, ``out_channels``, ``geometry``."""

    features: nn.Sequential

    def _finish(self, width: float, out_channels: int) -> None:
        self.width = width
        self.out_channels = out_channels
        _he_init(self.features)
        self.geometry: FeatureGeometry = feature_geometry(self.features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: ``Tensor[N, 3, H, W]`` -> ``Tensor[N, out_channels, h, w]``
        (channels-last in memory)."""
        # Channels-last activations on every path, training included: oneDNN's
        # convs and PyTorch's max pool are faster there on CPU than in NCHW
        # (PyTorch's NCHW max pool is the trunk's slowest layer): a ZF-5 x 0.25
        # Fast R-CNN training step 1.40x, a crop classifier's 1.17x
        # (benchmarks/training_layout.py). The values are the same up to float
        # rounding.
        return self.features(images.contiguous(memory_format=torch.channels_last))

    def extra_repr(self) -> str:
        g = self.geometry
        return f"width={self.width}, out_channels={self.out_channels}, stride={g.stride}, offset={g.offset}"
