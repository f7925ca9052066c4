"""SPP classifier (SPEC section 8): conv trunk -> SPP -> fc6 -> fc7 -> fc8.

Shapes: N images of any size 3 x H x W; C trunk channels; B = sum(n*n) bins;
K classes. forward: (N, 3, H, W) -> (N, K) logits.

Because the SPP layer turns any map into a C * B vector, one set of weights
serves every input size: this is what single-size and multi-size training
share, and why testing can run on full images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sppnet.ops import SpatialPyramidPooling

__all__ = ["SPPClassifier"]


class SPPClassifier(nn.Module):
    """``trunk`` is a conv trunk with ``out_channels`` (e.g. ``ZF5``)."""

    def __init__(
        self,
        trunk: nn.Module,
        num_classes: int,
        levels: Sequence[int] = (6, 3, 2, 1),
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.trunk = trunk
        self.spp = SpatialPyramidPooling(levels)
        self.fc6 = nn.Sequential(nn.Linear(self.spp.out_features(trunk.out_channels), hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc8 = nn.Linear(hidden, num_classes)
        for layer in (self.fc6[0], self.fc7[0]):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def forward(self, images: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """``sizes``: optional valid (h, w) of each image's conv5 map, for a
        padded batch of different sizes (see ``spatial_pyramid_pool``)."""
        return self.fc8(self.fc7(self.fc6(self.spp(self.trunk(images), sizes))))
