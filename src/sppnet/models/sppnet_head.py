"""SPP-net's detection head (SPEC section 4): the pre-trained classifier's fc6
and fc7 on windows pooled from frozen conv5 maps, and a new (K+1)-way fc8 for
fine-tuning. Shapes: R windows, C * B pooled values, H the fc width."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SPPNetHead"]


class SPPNetHead(nn.Module):
    """fc6 -> fc7 (-> fc8 while fine-tuning) on pooled windows ``(R, C * B)``."""

    def __init__(self, fc6: nn.Sequential, fc7: nn.Sequential, num_classes: int) -> None:
        super().__init__()
        self.fc6, self.fc7 = fc6, fc7
        self.fc8 = nn.Linear(fc7[0].out_features, num_classes)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def features(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc7(self.fc6(pooled))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.features(pooled))
