"""SPP classifier (SPEC section 8): conv trunk -> SPP -> fc6 -> fc7 -> fc8.

Shapes: N images of any size 3 x H x W; C trunk channels; B = sum(n*n) bins;
K classes. forward: (N, 3, H, W) -> (N, K) logits.

Because the SPP layer turns any map into a C * B vector, one set of weights
serves every input size: this is what single-size and multi-size training
share, and why testing can run on full images and on views pooled from one
feature map (``head`` takes pooled vectors).

``spp=False`` builds the paper's no-SPP baseline: the last pooling is one 3 x 3
max pool with stride 2, which turns ZF-5's 13 x 13 conv5 map of a 224 input
into 6 x 6; the fc layers then fit only the fixed input size ``input_size``
and any other size is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sppnet.ops import SpatialPyramidPooling

__all__ = ["SPPClassifier", "FixedPool"]


class FixedPool(nn.Module):
    """The no-SPP baseline's pool: max pool ``window``/``stride`` that must
    yield ``out_size`` x ``out_size`` (so only the fixed input size fits)."""

    def __init__(self, window: int = 3, stride: int = 2, out_size: int = 6) -> None:
        super().__init__()
        self.window, self.stride, self.out_size = window, stride, out_size
        self.levels = (out_size,)

    def out_features(self, channels: int) -> int:
        return channels * self.out_size * self.out_size

    def forward(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        if sizes is not None:
            raise ValueError("the no-SPP baseline cannot pool padded batches of different sizes")
        pooled = nn.functional.max_pool2d(x, self.window, self.stride)
        if pooled.shape[-2:] != (self.out_size, self.out_size):
            raise ValueError(
                f"the no-SPP baseline needs a conv map that pools to {self.out_size} x {self.out_size}, "
                f"got {tuple(x.shape[-2:])} -> {tuple(pooled.shape[-2:])}: use the training input size"
            )
        return pooled.flatten(1)

    def extra_repr(self) -> str:
        return f"window={self.window}, stride={self.stride}, out_size={self.out_size}"


class SPPClassifier(nn.Module):
    """``trunk`` is a conv trunk with ``out_channels`` and ``geometry`` (e.g. ``ZF5``);
    ``input_size`` is the fixed input side of the no-SPP baseline (``spp=False``)."""

    def __init__(
        self,
        trunk: nn.Module,
        num_classes: int,
        levels: Sequence[int] = (6, 3, 2, 1),
        hidden: int = 4096,
        dropout: float = 0.5,
        spp: bool = True,
        input_size: int = 224,
        fc_bias: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.trunk = trunk
        if spp:
            self.spp = SpatialPyramidPooling(levels)
        else:
            with torch.no_grad():
                side = trunk(torch.zeros(1, 3, input_size, input_size)).shape[-1]
            if side < 3:
                raise ValueError(f"the no-SPP baseline needs a conv map of at least 3 x 3; {input_size} gives {side}")
            self.spp = FixedPool(3, 2, (side - 3) // 2 + 1)
        self.fc6 = nn.Sequential(nn.Linear(self.spp.out_features(trunk.out_channels), hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc8 = nn.Linear(hidden, num_classes)
        for layer in (self.fc6[0], self.fc7[0]):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.constant_(layer.bias, fc_bias)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    @property
    def uses_spp(self) -> bool:
        return isinstance(self.spp, SpatialPyramidPooling)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled vectors ``(R, C * B)`` -> logits ``(R, K)``."""
        return self.fc8(self.fc7(self.fc6(pooled)))

    def forward(self, images: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """``sizes``: optional valid (h, w) of each image's conv map, for a
        padded batch of different sizes (see ``spatial_pyramid_pool``)."""
        return self.head(self.spp(self.trunk(images), sizes))
