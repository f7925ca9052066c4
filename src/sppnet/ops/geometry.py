"""From image windows to feature-map cells: the one place where this happens.

Shapes: R windows, N images.

A conv trunk maps input pixels to feature-map cells with a total stride S and
an offset O: the receptive field of cell j is centred on pixel index
``O + S * j`` (SPEC section 2). Both are derived from the trunk's layers by
``feature_geometry``, never typed in by hand: for ZF-5 this gives S = 16 and
O = 20, the authors' ``offset0 = 21`` in MATLAB's 1-based pixels.

Windows are boxes in the package convention (xyxy, 0-based continuous pixels
at the network's input scale). Both rules look at a window through its first
and last pixel, ``first = x1`` and ``last = x2 - 1`` as pixel indices, which is
how the authors' code saw its inclusive boxes:

- ``"sppnet"`` (SPP-net's corner rule): left = floor((first - O) / S) + 1,
  right = ceil((last - O) / S) - 1, i.e. the cells whose receptive-field
  centres lie strictly inside the window; the paper's x' = floor(x/S) + 1 and
  x' = ceil(x/S) - 1 when O = 0. A window too small to contain a centre
  collapses to the cell nearest its centre.
- ``"fast-rcnn"`` (Fast R-CNN's rounding): start = round(first / S),
  end = max(round(last / S), start).

Cells are inclusive at both ends; with ``feature_size`` they are clipped to
the map. ``boxes_to_rois`` turns per-image boxes into the ``(K, 5)`` RoIs of
``roi_spp``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sppnet.ops.tracing import is_exporting

__all__ = ["FeatureGeometry", "feature_geometry", "boxes_to_cells", "boxes_to_rois", "CELL_RULES"]

CELL_RULES = ("sppnet", "fast-rcnn")

# Layers that keep every cell where it is (elementwise or per-position).
_POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.LocalResponseNorm, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity,
)


@dataclass(frozen=True)
class FeatureGeometry:
    """How a conv trunk's cells sit on its input.

    stride: total stride S in input pixels.
    offset: pixel index (0-based, may be fractional) of the centre of cell 0's
        receptive field; cell j is centred on ``offset + stride * j``.
    receptive_field: side of one cell's receptive field in pixels.
    """

    stride: int
    offset: float
    receptive_field: int

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")


def _square(value, name: str, layer: nn.Module) -> int:
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"cannot derive a square geometry through {layer}: {name}={value} differs per axis")
        value = value[0]
    return int(value)


def _layer_params(layer: nn.Module) -> tuple[int, int, float] | None:
    """(effective kernel, stride, padding) of a layer that moves cells, None
    for pointwise layers."""
    if isinstance(layer, _POINTWISE):
        return None
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _square(layer.kernel_size, "kernel_size", layer)
        stride = _square(layer.stride if layer.stride is not None else kernel, "stride", layer)
        dilation = _square(getattr(layer, "dilation", 1), "dilation", layer)
        effective = dilation * (kernel - 1) + 1
        padding = layer.padding
        if padding == "same":
            padding = (effective - 1) / 2
        elif padding == "valid":
            padding = 0
        else:
            padding = _square(padding, "padding", layer)
        return effective, stride, padding
    raise ValueError(
        f"cannot derive feature geometry through {type(layer).__name__} ({layer}); "
        "only conv, pooling and pointwise layers are supported"
    )


def _flatten(layers: nn.Module | Iterable[nn.Module]) -> list[nn.Module]:
    if isinstance(layers, nn.Sequential):
        items: Iterable[nn.Module] = layers.children()
    elif isinstance(layers, nn.Module):
        items = [layers]
    else:
        items = layers
    flat: list[nn.Module] = []
    for layer in items:
        if isinstance(layer, nn.Sequential):
            flat.extend(_flatten(layer))
        else:
            flat.append(layer)
    return flat


def feature_geometry(layers: nn.Module | Iterable[nn.Module]) -> FeatureGeometry:
    """Stride, centre offset and receptive field of a stack of layers.

    ``layers``: an ``nn.Sequential`` (nested ones are flattened), a single
    layer, or an iterable of layers, applied in order. Conv and pooling layers
    with square kernels move cells; activations, normalisations and dropout
    are pointwise; anything else raises ``ValueError``.

    Per layer with effective kernel k, stride s, padding p, an output cell j is
    centred on input index ``s*j - p + (k-1)/2``; composing gives
    ``S' = S*s``, ``O' = O + S*((k-1)/2 - p)`` and ``r' = r + (k-1)*S``.
    """
    stride, offset, field = 1, 0.0, 1
    for layer in _flatten(layers):
        params = _layer_params(layer)
        if params is None:
            continue
        kernel, layer_stride, padding = params
        offset += stride * ((kernel - 1) / 2 - padding)
        field += (kernel - 1) * stride
        stride *= layer_stride
    return FeatureGeometry(stride=stride, offset=offset, receptive_field=field)


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


def boxes_to_cells(
    boxes: torch.Tensor,
    geometry: FeatureGeometry,
    rule: str = "sppnet",
    feature_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Map image windows to inclusive feature-map cells.

    Args:
        boxes: ``Tensor[R, 4]`` xyxy, 0-based continuous pixels at the
            network's input scale.
        geometry: the trunk's ``FeatureGeometry``.
        rule: ``"sppnet"`` or ``"fast-rcnn"`` (see the module docstring).
        feature_size: optional (height, width) of the map to clip to; ints,
            or tensors while tracing (then the graph clips to each input's map).

    Returns:
        ``LongTensor[R, 4]`` cells (x0, y0, x1, y1), inclusive, x1 >= x0 and
        y1 >= y0.
    """
    if rule not in CELL_RULES:
        raise ValueError(f"unknown cell rule {rule!r}; choose one of {CELL_RULES}")
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a (R, 4) tensor, got {shape}")
    if boxes.is_complex():
        raise TypeError(f"boxes must hold real numbers, got dtype {boxes.dtype}")
    exporting = is_exporting()
    # A traced graph cannot raise: the data check runs only eagerly.
    if not exporting and boxes.numel() and not bool(torch.isfinite(boxes).all()):
        bad = (~torch.isfinite(boxes)).any(1).nonzero()[0, 0].item()
        raise ValueError(f"boxes contain NaN or inf, first at row {bad}: {boxes[bad].tolist()}")
    pixels = boxes.double()
    first = pixels[:, :2]  # (x, y) of the first pixel
    last = pixels[:, 2:] - 1  # (x, y) of the last pixel
    stride, offset = geometry.stride, geometry.offset
    if rule == "sppnet":
        start = torch.floor((first - offset) / stride) + 1
        end = torch.ceil((last - offset) / stride) - 1
        centre = _round_half_up(((first + last) / 2 - offset) / stride)
        empty = end < start
        start = torch.where(empty, centre, start)
        end = torch.where(empty, centre, end)
    else:
        start = _round_half_up(first / stride)
        end = torch.maximum(_round_half_up(last / stride), start)
    if feature_size is not None and (exporting or isinstance(feature_size, torch.Tensor)):
        # Traced: (height, width) stay tensors (e.g. ``features.shape[-2:]``
        # or ``shape_of(features)[2:]``), so the graph clips to each input's map.
        height, width = (torch.as_tensor(v, device=start.device) for v in feature_size)
        upper = torch.stack([width, height]).to(start.dtype) - 1
        start = torch.minimum(start.clamp(min=0), upper)
        end = torch.minimum(end.clamp(min=0), upper)
    elif feature_size is not None:
        try:
            height, width = (int(v) for v in feature_size)
        except (TypeError, ValueError, OverflowError):  # not two numbers, NaN, inf
            raise ValueError(f"feature_size must be (height, width) in cells, got {feature_size!r}") from None
        if height < 1 or width < 1:
            raise ValueError(f"feature_size must be >= 1 in both dimensions, got {tuple(feature_size)}")
        upper = torch.tensor([width - 1, height - 1], dtype=start.dtype, device=start.device)
        start = torch.minimum(start.clamp(min=0), upper)
        end = torch.minimum(end.clamp(min=0), upper)
    return torch.cat([start, end], dim=1).long()


def boxes_to_rois(
    boxes_per_image: Sequence[torch.Tensor],
    geometry: FeatureGeometry,
    rule: str = "sppnet",
    feature_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-image windows -> ``LongTensor[K, 5]`` RoIs (batch index, x0, y0, x1, y1)
    for ``roi_spp``, image i's boxes with batch index i, in order."""
    if len(boxes_per_image) == 0:
        return torch.zeros((0, 5), dtype=torch.long)
    rois = []
    for index, boxes in enumerate(boxes_per_image):
        cells = boxes_to_cells(boxes, geometry, rule, feature_size)
        batch = torch.full((cells.shape[0], 1), index, dtype=torch.long, device=cells.device)
        rois.append(torch.cat([batch, cells], dim=1))
    return torch.cat(rois, dim=0)

