"""R-CNN's network (SPEC section 6): each window warped to the network's fixed
input with context, then the whole classifier on the batch of windows.

Shapes: R windows (xyxy, continuous pixels of the image), S the warp size,
C * B the pooled length, H the fc width, K + 1 classes with background.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from sppnet.models.classifier import SPPClassifier

__all__ = ["RCNNNetwork", "context_boxes", "warp_windows"]


def context_boxes(boxes: torch.Tensor, size: int, context: int) -> torch.Tensor:
    """Boxes ``(R, 4)`` enlarged about their centres by ``size / (size - 2 *
    context)``: warped to ``size`` x ``size``, the original box then fills the
    middle ``size - 2 * context`` pixels, with ``context`` pixels around it."""
    if not 0 <= 2 * context < size:
        raise ValueError(f"context must satisfy 0 <= 2 * context < size, got context={context}, size={size}")
    factor = size / (size - 2 * context)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
    return torch.cat([centres - half, centres + half], dim=1)


def warp_windows(image: torch.Tensor, boxes: torch.Tensor, size: int, context: int = 0) -> torch.Tensor:
    """Normalised image ``(3, H, W)`` and windows ``(R, 4)`` -> ``(R, 3, size, size)``.

    Each window, enlarged by ``context_boxes``, is sampled bilinearly at the
    centres of a size x size grid over it (as R-CNN's imresize with
    antialiasing off); the image is extended by zeros, the mean pixel after
    normalisation, so parts of a window outside the image are mean-filled."""
    if image.dim() != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    boxes = boxes.to(image.dtype).reshape(-1, 4)
    # One pixel of zeros: roi_align clamps samples within a pixel of the border
    # to the edge pixel; with the pad they blend into the mean like any other.
    padded = F.pad(image, (1, 1, 1, 1))[None]
    windows = context_boxes(boxes, size, context) + 1
    rois = torch.cat([windows.new_zeros(len(windows), 1), windows], dim=1)
    return roi_align(padded, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=1, aligned=True)


class RCNNNetwork(nn.Module):
    """The whole network on warped windows ``(R, 3, S, S)``: the classifier's
    trunk and pooling (it pools the fixed-size map), fc6, fc7, and a new
    (K+1)-way fc8 for fine-tuning, initialised N(0, 0.01)."""

    def __init__(self, classifier: SPPClassifier, num_classes: int) -> None:
        super().__init__()
        self.trunk, self.pool, self.fc6, self.fc7 = classifier.trunk, classifier.spp, classifier.fc6, classifier.fc7
        self.fc8 = nn.Linear(classifier.fc7[0].out_features, num_classes)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def features(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool5 ``(R, C * B)`` and fc7 ``(R, H)``."""
        pooled = self.pool(self.trunk(windows))
        return pooled, self.fc7(self.fc6(pooled))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """logits ``(R, K + 1)``."""
        return self.fc8(self.features(windows)[1])
