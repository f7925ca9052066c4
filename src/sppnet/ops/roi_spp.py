"""RoI spatial pyramid pooling: the one pooling op of every pipeline.

Shapes: N images, C channels, H x W feature map, K RoIs, L pyramid levels,
D = C * sum(n * n for n in levels).

Bins (SPEC section 1): bin i of level n over a span of h cells starting at cell
t covers rows [t + floor(i*h/n), t + ceil((i+1)*h/n)), and likewise columns.
Every bin holds at least one cell, also when h < n (bins then share cells).
These are the bins of ``adaptive_max_pool2d``. torchvision's ``roi_pool``
(and ONNX Runtime's ``MaxRoiPool``) compute the same edges in float32 as
floor(i * float(h/n)) and ceil((i+1) * float(h/n)), which is off by one for
some spans: at level 7 a span of 57 cells gets a last bin reaching one cell
past the RoI (also 114, 121, ...; level 11 from 29, 13 from 7, 14 from 62).
So the torchvision path (other devices, tracing and export) computes every
bin's edges in integers and pools each bin as its own whole-cell box at
output size 1 x 1, where that float arithmetic is exact.

Output layout: levels in the order given; within a level the (C, n, n) block
flattened, i.e. channel-major, then bin row, then bin column.

SPP-net uses levels (6, 3, 2, 1); Fast R-CNN's RoI pooling is the one-level
case (7,) or (6,).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from sppnet.ops import _spp_cpu
from sppnet.ops.threads import kernel_threads, torch_thread_count_kept
from sppnet.ops.tracing import is_exporting, shape_of

__all__ = ["roi_spp", "spp_output_size", "check_levels"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The parallel backward splits the RoIs into _BACKWARD_TASKS tasks, each with
# its own gradient buffer (numba runs them on however many threads it has);
# above _BACKWARD_BUFFER_BYTES of buffers in all it uses fewer tasks.
_BACKWARD_TASKS = 8
_BACKWARD_BUFFER_BYTES = 512 * 2**20
# Below this many output values (K * D) the serial forward kernel runs: the
# work is too small to pay for waking numba's thread pool. Two threads, 64
# channels, levels (6, 3, 2, 1) (benchmarks/results/numba-builds-2026-12-06.py):
# 40 RoIs 0.52-0.53 ms serial / 0.40-0.42 ms parallel, 10 RoIs 0.34-0.36 ms both.
_PARALLEL_MIN_OUTPUTS = 2**16
# The backward's threshold sets how many tasks sum the RoIs' gradients, hence
# their float rounding; it stays where it was when the builds were not apart.
_BACKWARD_PARALLEL_MIN_OUTPUTS = 2**20


def check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """Validate pyramid levels: a non-empty sequence of positive ints."""
    if isinstance(levels, (int, str, bytes)) or not isinstance(levels, Sequence):
        raise ValueError(f"levels must be a sequence of positive ints, got {levels!r}")
    if len(levels) == 0:
        raise ValueError("levels must not be empty")
    for n in levels:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"every pyramid level must be a positive int, got {n!r} in {tuple(levels)!r}")
    return tuple(int(n) for n in levels)


def spp_output_size(channels: int, levels: Sequence[int]) -> int:
    """Length of the pooled vector: C * sum(n * n)."""
    return channels * sum(n * n for n in check_levels(levels))


def _check_features(features: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a Tensor, got {type(features).__name__}")
    if features.dim() != 4:
        raise ValueError(f"features must be a (N, C, H, W) tensor, got shape {tuple(features.shape)}")
    if features.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"features must be floating point, got dtype {features.dtype}")
    n, c, h, w = features.shape
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"features must have C, H, W >= 1, got shape {tuple(features.shape)}")


def _clip_rois(rois: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Validate (K, 5) RoIs and return them as int64 cells inside the map.

    Float coordinates are rounded half up (as torchvision's roi_pool does at
    spatial_scale 1); cells outside the map are clipped to it; x1 < x0 (or
    y1 < y0) collapses the span to the one cell x0 (or y0).
    """
    if not isinstance(rois, torch.Tensor):
        raise TypeError(f"rois must be a Tensor, got {type(rois).__name__}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be a (K, 5) tensor of (batch index, x0, y0, x1, y1), got shape {tuple(rois.shape)}")
    if rois.device != features.device:
        raise ValueError(f"rois are on {rois.device} but features are on {features.device}")
    if rois.dtype == torch.bool or rois.is_complex():
        raise TypeError(f"rois must be real numbers, got dtype {rois.dtype}")
    n, _, h, w = features.shape
    if rois.shape[0] == 0:
        return torch.zeros((0, 5), dtype=torch.int64, device=rois.device)
    if rois.is_floating_point():
        if not bool(torch.isfinite(rois).all()):
            bad = (~torch.isfinite(rois)).any(1).nonzero()[0, 0].item()
            raise ValueError(f"rois contain NaN or inf, first at row {bad}: {rois[bad].tolist()}")
        batch = rois[:, 0]
        if not bool((batch == batch.round()).all()):
            raise ValueError("the batch index column of rois must hold whole numbers")
        cells = torch.floor(rois.double() + 0.5).long()
    else:
        cells = rois.long()
    batch = cells[:, 0]
    if bool((batch < 0).any()) or bool((batch >= n).any()):
        bad = ((batch < 0) | (batch >= n)).nonzero()[0, 0].item()
        raise ValueError(f"roi {bad} has batch index {batch[bad].item()}, outside [0, {n}) for features of shape {tuple(features.shape)}")
    x0 = cells[:, 1].clamp(0, w - 1)
    y0 = cells[:, 2].clamp(0, h - 1)
    x1 = torch.maximum(cells[:, 3].clamp(0, w - 1), x0)
    y1 = torch.maximum(cells[:, 4].clamp(0, h - 1), y0)
    return torch.stack([batch, x0, y0, x1, y1], dim=1)


def _level_plan(levels: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """How the CPU kernel computes the levels: finest first, each coarser one
    derived from the smallest finer level it divides (fewest bins to read)."""
    order = sorted(range(len(levels)), key=lambda i: (-levels[i], i))
    sources = [-1] * len(levels)
    done: list[int] = []
    for i in order:
        candidates = [j for j in done if levels[j] % levels[i] == 0]
        if candidates:
            sources[i] = min(candidates, key=lambda j: levels[j])
        done.append(i)
    bins = [n * n for n in levels]
    offsets = np.concatenate([[0], np.cumsum(bins)[:-1]]).astype(np.int64)
    as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return as_array(levels), as_array(order), as_array(sources), offsets


def _cpu_forward(features: torch.Tensor, cells: torch.Tensor, levels: tuple[int, ...], store_argmax: bool):
    compute_dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    # channels-last: the kernel's inner loop runs over contiguous channels.
    feat = features.detach().to(compute_dtype).permute(0, 2, 3, 1).contiguous()
    num_rois, channels = cells.shape[0], features.shape[1]
    width = spp_output_size(channels, levels)
    levels_arr, order, sources, bin_offsets = _level_plan(levels)
    out_offsets = bin_offsets * channels
    out = torch.empty((num_rois, width), dtype=compute_dtype)
    # Flat cell indices y * W + x; 16 bits when the map allows halve the
    # memory the backward pass has to stream.
    h, w = features.shape[2:]
    index_dtype = np.uint16 if h * w <= np.iinfo(np.uint16).max + 1 else np.int32
    argmax = torch.from_numpy(np.empty((num_rois, width) if store_argmax else (1, 1), dtype=index_dtype))
    parallel = out.numel() >= _PARALLEL_MIN_OUTPUTS and kernel_threads() > 1
    kernel = _spp_cpu.spp_forward_parallel if parallel else _spp_cpu.spp_forward_serial
    with torch_thread_count_kept():
        kernel(
            feat.numpy(), cells.numpy(), levels_arr, order, sources, bin_offsets, out_offsets,
            out.numpy(), argmax.numpy(), store_argmax,
        )
    return out.to(features.dtype), argmax


def _cpu_backward(grad_out: torch.Tensor, argmax: torch.Tensor, cells: torch.Tensor, levels, shape, dtype):
    n, c, h, w = shape
    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    grad_out = grad_out.to(compute_dtype).contiguous()
    buffer_bytes = n * c * h * w * grad_out.element_size()
    # The task count sets how the RoIs' gradients are grouped before they are
    # summed, hence the float rounding: it must not depend on the thread count
    # (it did, and a model trained with 1 thread differed from one trained with 2).
    tasks = max(1, min(_BACKWARD_TASKS, cells.shape[0], _BACKWARD_BUFFER_BYTES // max(buffer_bytes, 1)))
    if grad_out.numel() < _BACKWARD_PARALLEL_MIN_OUTPUTS:
        tasks = 1
    partial = torch.zeros((tasks, n, c, h * w), dtype=compute_dtype)
    channel_of_column = np.concatenate([np.repeat(np.arange(c, dtype=np.int64), k * k) for k in levels])
    # On one thread the serial build runs the same tasks one after another.
    kernel = _spp_cpu.spp_backward_parallel if tasks > 1 and kernel_threads() > 1 else _spp_cpu.spp_backward_serial
    with torch_thread_count_kept():
        kernel(
            grad_out.numpy(), argmax.numpy(), cells[:, 0].contiguous().numpy(), channel_of_column, partial.numpy()
        )
    grad = partial[0]
    for t in range(1, tasks):  # in task order, whatever the threads
        grad += partial[t]
    return grad.view(n, c, h, w).to(dtype)


class _RoISPPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, cells, levels):
        out, argmax = _cpu_forward(features, cells, levels, store_argmax=ctx.needs_input_grad[0])
        ctx.save_for_backward(cells, argmax)
        ctx.levels = levels
        ctx.shape = tuple(features.shape)
        ctx.dtype = features.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        cells, argmax = ctx.saved_tensors
        grad = _cpu_backward(grad_out, argmax, cells, ctx.levels, ctx.shape, ctx.dtype)
        return grad, None, None


def _traced_cells(rois: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``_clip_rois`` for a traced graph: the same rounding and clipping in
    tensor ops, the map size read from the features' dynamic shape. No data
    checks: a recorded graph cannot raise."""
    if not isinstance(rois, torch.Tensor) or rois.dim() != 2:
        shape = tuple(rois.shape) if isinstance(rois, torch.Tensor) else type(rois).__name__
        raise ValueError(f"rois must be a (K, 5) tensor of (batch index, x0, y0, x1, y1), got {shape}")
    shape = shape_of(features)
    last = torch.stack([shape[3], shape[2]]) - 1  # last cell (x, y)
    # Round half up in float64 as _clip_rois does (float32 would round 0.49999997 + 0.5 up to 1).
    cells = torch.floor(rois.double() + 0.5).long() if rois.is_floating_point() else rois.long()
    start = torch.minimum(cells[:, 1:3].clamp(min=0), last)
    end = torch.maximum(torch.minimum(cells[:, 3:5].clamp(min=0), last), start)
    return torch.cat([cells[:, :1], start, end], dim=1)


def _bin_boxes(cells: torch.Tensor, n: int) -> torch.Tensor:
    """Clipped cells ``(K, 5)`` -> the ``(K * n * n, 5)`` inclusive cell boxes
    of level n's bins (SPEC section 1 in integer arithmetic), each RoI's bins
    row-major. Tensor ops only, so a traced graph keeps K dynamic."""
    batch, x0, y0, x1, y1 = cells.unbind(1)
    steps = torch.arange(n, device=cells.device)

    def edges(first: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        span = (last - first + 1)[:, None]
        start = first[:, None] + torch.div(steps * span, n, rounding_mode="floor")
        end = first[:, None] + torch.div((steps + 1) * span + (n - 1), n, rounding_mode="floor") - 1
        return start, end  # (K, n) each

    ys, ye = edges(y0, y1)
    xs, xe = edges(x0, x1)
    rows, columns = (slice(None), slice(None), None), (slice(None), None, slice(None))
    # Broadcast by addition (not expand) so the ONNX graph needs no shape arithmetic.
    grid = ys[rows] * 0 + xs[columns] * 0  # (K, n, n) zeros
    boxes = [batch[:, None, None] + grid, xs[columns] + grid, ys[rows] + grid, xe[columns] + grid, ye[rows] + grid]
    return torch.stack(boxes, dim=-1).reshape(-1, 5)


def _torchvision_spp(features: torch.Tensor, cells: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """Non-CPU and export path: torchvision's roi_pool at output size 1 x 1
    on every bin's box (see the module docstring for why not roi_pool at
    n x n). Bins and argmax ties (first maximum in row-major order) are the
    same as the CPU kernel's."""
    from torchvision.ops import roi_pool  # on first use: see sppnet.ops.boxes

    dtype = features.dtype
    work = features if dtype != torch.bfloat16 else features.float()
    num_rois, channels = cells.shape[0], work.shape[1]
    pooled = []
    for n in levels:
        bins = roi_pool(work, _bin_boxes(cells, n).to(work.dtype), (1, 1), 1.0)  # (K * n * n, C, 1, 1)
        pooled.append(bins.reshape(num_rois, n * n, channels).transpose(1, 2).flatten(1))
    return torch.cat(pooled, dim=1).to(dtype)


def roi_spp(features: torch.Tensor, rois: torch.Tensor, levels: Sequence[int] = (6, 3, 2, 1)) -> torch.Tensor:
    """Max-pool every RoI into a fixed-length spatial pyramid vector.

    Args:
        features: ``Tensor[N, C, H, W]``, float16/bfloat16/float32/float64.
        rois: ``Tensor[K, 5]`` rows ``(batch index, x0, y0, x1, y1)`` in feature
            map cells, inclusive at both ends (build them with
            ``sppnet.ops.boxes_to_cells``). Float values are rounded half up.
            Cells outside the map are clipped to it; ``x1 < x0`` (or
            ``y1 < y0``) collapses that side to the single cell ``x0`` (``y0``).
        levels: bins per side of each pyramid level, e.g. ``(6, 3, 2, 1)``.

    Returns:
        ``Tensor[K, C * sum(n * n)]`` with the features' dtype and device:
        levels in the given order, each level's ``(C, n, n)`` block flattened.

    Differentiable with respect to ``features``: the gradient of each output
    goes to the cell that held the maximum (the first one in row-major order
    on ties). On CPU a multi-threaded numba kernel runs; other devices use
    torchvision's ``roi_pool`` on every bin, with identical results. While
    tracing or exporting (``sppnet.ops.tracing.is_exporting``) the
    torchvision path runs on every device: it is a recorded op with an ONNX
    form (``MaxRoiPool``), where the numba kernel is opaque to the tracer.
    """
    if is_exporting():
        if not isinstance(features, torch.Tensor) or features.dim() != 4 or features.dtype not in _FLOAT_DTYPES:
            raise ValueError("features must be a floating point (N, C, H, W) tensor")
        return _torchvision_spp(features, _traced_cells(rois, features), check_levels(levels))
    _check_features(features)
    levels = check_levels(levels)
    cells = _clip_rois(rois, features)
    if features.device.type == "cpu":
        return _RoISPPFunction.apply(features, cells, levels)
    return _torchvision_spp(features, cells, levels)
