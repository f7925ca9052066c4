"""Whole-map spatial pyramid pooling: any H x W in, a fixed-length vector out.

Shapes: N images, C channels, H x W map, D = C * sum(n * n for n in levels).

This is ``roi_spp`` with one RoI covering each image's map (SPEC section 1,
DESIGN "one SPP path"), so the bins are those of ``adaptive_max_pool2d`` for
every size, including maps smaller than the finest level.

A batch whose images had different sizes can be padded to a common H x W and
pooled in one call by passing ``sizes``: row i = (h_i, w_i), the valid
top-left region of image i's map. Padding is then never pooled.

While tracing or exporting, the RoIs are built from the map's dynamic shape
and ``roi_spp`` takes its torchvision (ONNX ``MaxRoiPool``) path, so an
exported graph pools correctly at every H x W, not only at sizes that divide
evenly as ONNX's adaptive pooling would need. ``mode="avg"`` has no such
path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sppnet.ops.roi_spp import check_levels, roi_spp, spp_output_size
from sppnet.ops.tracing import is_exporting, shape_of

__all__ = ["spatial_pyramid_pool", "SpatialPyramidPooling"]


def _whole_map_rois(x: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
    n, _, h, w = x.shape
    index = torch.arange(n, device=x.device)
    if sizes is None:
        heights = torch.full((n,), h, device=x.device)
        widths = torch.full((n,), w, device=x.device)
    else:
        if not isinstance(sizes, torch.Tensor) or sizes.shape != (n, 2):
            shape = tuple(sizes.shape) if isinstance(sizes, torch.Tensor) else type(sizes).__name__
            raise ValueError(f"sizes must be a ({n}, 2) tensor of valid (height, width) per image, got {shape}")
        if sizes.is_complex() or sizes.dtype == torch.bool:
            raise TypeError(f"sizes must hold real numbers of cells, got dtype {sizes.dtype}")
        sizes = sizes.to(x.device)
        if sizes.is_floating_point() and not bool((sizes == sizes.round()).all()):
            raise ValueError(f"sizes must be whole numbers of cells, got {sizes.tolist()}")
        heights, widths = sizes[:, 0].long(), sizes[:, 1].long()
        if bool(((heights < 1) | (heights > h) | (widths < 1) | (widths > w)).any()):
            raise ValueError(f"sizes must lie in 1..{h} x 1..{w} (the padded map), got {sizes.tolist()}")
    zeros = torch.zeros_like(index)
    return torch.stack([index, zeros, zeros, widths - 1, heights - 1], dim=1)


def _traced_whole_map_rois(x: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
    """``_whole_map_rois`` for a traced graph: N, H and W come from the map's
    dynamic shape (``sizes`` unchecked), so one graph serves every input size."""
    ones = torch.ones_like(x[:, 0, 0, 0], dtype=torch.long)  # (N,)
    if sizes is None:
        shape = shape_of(x)
        heights, widths = ones * shape[2], ones * shape[3]
    else:
        heights, widths = sizes[:, 0].long(), sizes[:, 1].long()
    zeros = ones * 0
    return torch.stack([ones.cumsum(0) - 1, zeros, zeros, widths - 1, heights - 1], dim=1)


def spatial_pyramid_pool(
    x: torch.Tensor, levels: Sequence[int] = (6, 3, 2, 1), sizes: torch.Tensor | None = None
) -> torch.Tensor:
    """Max-pool each image's whole map into ``Tensor[N, C * sum(n*n)]``.

    Args:
        x: ``Tensor[N, C, H, W]``, any H, W >= 1.
        levels: bins per side of each pyramid level.
        sizes: optional ``Tensor[N, 2]`` of (h, w): pool only the top-left
            h x w cells of image i (a padded batch of different sizes).

    Output layout as ``roi_spp``: levels in order, each ``(C, n, n)`` block
    flattened.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (N, C, H, W) tensor, got {shape}")
    rois = _traced_whole_map_rois(x, sizes) if is_exporting() else _whole_map_rois(x, sizes)
    return roi_spp(x, rois, levels)


def _spatial_pyramid_avg_pool(x: torch.Tensor, levels: tuple[int, ...], sizes: torch.Tensor | None) -> torch.Tensor:
    # Average pooling over the same bins: adaptive_avg_pool2d shares SPEC's bin rule.
    if sizes is None:
        return torch.cat([F.adaptive_avg_pool2d(x, n).flatten(1) for n in levels], dim=1)
    rois = _whole_map_rois(x, sizes)
    rows = [
        torch.cat([F.adaptive_avg_pool2d(x[i : i + 1, :, : int(r[4]) + 1, : int(r[3]) + 1], n).flatten(1) for n in levels], 1)
        for i, r in enumerate(rois.tolist())
    ]
    return torch.cat(rows, dim=0)


class SpatialPyramidPooling(nn.Module):
    """Spatial pyramid pooling layer (He et al., 2014).

    ``(N, C, H, W) -> (N, C * sum(n*n))`` for any H, W >= 1. ``mode="max"`` is
    the paper's; ``"avg"`` averages over the same bins. ``forward`` accepts
    ``sizes`` (``Tensor[N, 2]``, valid (h, w) per image) for padded batches.
    """

    def __init__(self, levels: Sequence[int] = (6, 3, 2, 1), mode: str = "max") -> None:
        super().__init__()
        self.levels = check_levels(levels)
        if mode not in ("max", "avg"):
            raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
        self.mode = mode

    def out_features(self, channels: int) -> int:
        """Length of the output vector for a map with ``channels`` channels."""
        return spp_output_size(channels, self.levels)

    def forward(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "max":
            return spatial_pyramid_pool(x, self.levels, sizes)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or min(x.shape[1:]) < 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a (N, C, H, W) tensor with C, H, W >= 1, got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"x must be floating point for average pooling, got dtype {x.dtype}")
        return _spatial_pyramid_avg_pool(x, self.levels, sizes)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, mode={self.mode!r}, bins={sum(n * n for n in self.levels)}"
