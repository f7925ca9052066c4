"""Local Response Normalisation with exact, fast CPU kernels (numba).

Shapes: N images, C channels, H x W map; P = H * W pixels per image.

The formula is torch's (and Caffe's across-channel LRN):
``b_c = a_c / s_c ** beta`` with ``s_c = k + alpha / n * sum_{c' in window(c)} a_{c'} ** 2``,
the window holding the ``n // 2`` channels before c, c itself and the
``(n - 1) // 2`` after it, zeros outside ``[0, C)``.

``torch.nn.LocalResponseNorm`` squares, pads and average-pools a copy of the
whole activation (and under bf16 autocast runs that pooling, and returns its
output, in float32); on ZF-5 it costs more than all the convs. Here each value
is read once into a small scratch buffer of squares that stays in cache, and
the window sums are vector adds over it: on channels-last memory a block of
pixels' channel rows lies in one flat buffer, each row padded with the
window's zeros, so the sums run along it in one long loop; on NCHW memory a
tile of pixels is read channel row by channel row (contiguous) and the sums
run across the tile's pixels. Each sum adds its window's squares in channel
order (no running sum, so no cancellation), the same on both layouts: NCHW
and channels-last inputs give bit-identical outputs. No copies of the input
(unless it is neither NCHW- nor channels-last-dense); the output has the
input's memory format and dtype (bfloat16 stays bfloat16).

Backward (the closed form of Caffe's LRN layer), with ``r_c = s_c ** -beta``:
``grad_a_j = g_j * r_j - 2 * alpha * beta / n * a_j * sum_{c: j in window(c)} g_c * a_c * r_c / s_c``.
Only the input is saved; backward recomputes s (a window sum) from it.

Precision: float32 and float64 compute in their own type; bfloat16 is read as
its bits, widened to float32, computed in float32 and rounded to nearest even
on the way out (NaN stays NaN). With beta = 0.75 the forward is
``a / (q * sqrt(q))`` with ``q = sqrt(s)`` (backward: one division for
``s ** -1.75``); 0.5 and 1 have their own forms; any other beta calls pow.
These square roots and divisions bound the speed (about 10 ms for ZF-5's
96 x 342 x 457 conv1 map on one Zen 4 core). Large inputs run on numba's
threads, as many as torch's (``sppnet.ops.threads``, as roi_spp's kernels do); every output
value is computed by one thread with the same arithmetic whatever the thread
count, so results are deterministic and do not depend on it.

``LocalResponseNorm`` (a ``torch.nn.LocalResponseNorm``, same state dict and
repr) runs the kernels for 4-D CPU float32/bfloat16 tensors in eager mode; for
anything else (other devices, float64, 3-D or 5-D input, TorchScript, tracing,
ONNX or torch.export, torch.compile) it is torch's own layer, so exported
graphs hold the standard ops. ``local_response_norm`` also takes float64 (what
the gradient checks use).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload
from torch.autograd.function import once_differentiable

from sppnet.ops.threads import cached_kernel, kernel_threads, torch_thread_count_kept
from sppnet.ops.tracing import is_exporting

__all__ = ["LocalResponseNorm", "local_response_norm"]

_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
_MODULE_DTYPES = (torch.float32, torch.bfloat16)
# Below this many values the serial kernels run: waking numba's thread pool
# costs more than the work.
_PARALLEL_MIN_VALUES = 2**16
# NCHW data is read in tiles of C channel rows of ``tile`` pixels; the
# tile's squares (C + n - 1 rows) take about this many values (they stay in
# L2 for the window sums and the output pass; longer rows read faster).
_TILE_VALUES = 2**17
# Channels-last data is read in blocks of pixels of about this many values.
_BLOCK_VALUES = 2**13
# Runs of work per thread (load balance); the split never changes a value.
_GROUPS_PER_THREAD = 4
# How s ** -beta is computed.
_POW_GENERAL, _POW_075, _POW_05, _POW_1 = 0, 1, 2, 3


# --- bfloat16 <-> float32 bit casts -------------------------------------------------------------------

@intrinsic
def _f32_from_bits(typingctx, bits):
    """float32 with the bit pattern of an integer's low 32 bits."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = args[0]
        if bits.bitwidth > 32:
            low = builder.trunc(low, ir.IntType(32))
        elif bits.bitwidth < 32:
            low = builder.zext(low, ir.IntType(32))
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _bits_from_f32(typingctx, value):
    """uint32 bit pattern of a float32."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


def _widen(value):
    """A stored value as the compute type (bfloat16 bits -> float32)."""


@overload(_widen, inline="always")
def _widen_impl(value):
    if value == types.uint16:
        return lambda value: _f32_from_bits(np.uint32(value) << np.uint32(16))
    return lambda value: value


def _narrow(value, like):
    """A computed value as the storage type of ``like`` (float32 -> bfloat16 bits)."""


@overload(_narrow, inline="always")
def _narrow_impl(value, like):
    if like == types.uint16:
        def to_bf16(value, like):
            bits = _bits_from_f32(value)
            if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                # NaN: keep sign and top payload bits, force it quiet (never rounds to inf).
                return np.uint16((bits >> np.uint32(16)) | np.uint32(0x0040))
            # Round to nearest, ties to even.
            rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
            return np.uint16(rounded >> np.uint32(16))
        return to_bf16
    return lambda value, like: value


@numba.njit(inline="always")
def _inv_pow(s, beta, mode, one):
    """s ** -beta (``one``: 1 in the compute type)."""
    if mode == _POW_075:
        q = np.sqrt(s)
        return one / (q * np.sqrt(q))
    if mode == _POW_05:
        return one / np.sqrt(s)
    if mode == _POW_1:
        return one / s
    return s ** (-beta)


# --- kernels ------------------------------------------------------------------------------------------
# params: (alpha / n, k, beta, 2 * alpha * beta / n, 1) in the compute type; its
# dtype is the dtype of every scratch buffer.

def _forward_cl(x, out, size, params, mode, groups, block):
    """Channels-last: x, out (M, C), one pixel's channels per row.

    ``groups`` runs of consecutive pixels (one scratch buffer per run), each in
    blocks of ``block`` pixels whose squares lie in one flat buffer, each row
    padded with the window's zeros (pre before, post after): the window sums
    of a whole block are then one long vector loop."""
    pixels, channels = x.shape
    pre = size // 2
    padded = channels + size - 1
    coef, k, beta, one = params[0], params[1], params[2], params[4]
    for group in numba.prange(groups):
        sq = np.zeros(block * padded, dtype=params.dtype)  # the padding is never written
        s = np.empty(block * padded, dtype=params.dtype)
        stop = (group + 1) * pixels // groups
        for m0 in range(group * pixels // groups, stop, block):
            rows = min(block, stop - m0)
            _squares_cl(x, m0, rows, padded, pre, sq)
            _window_sum_flat(sq, size, rows * padded - (size - 1), s)
            for i in range(rows):
                src = x[m0 + i]
                dst = out[m0 + i]
                # Slices, not base + c indices: numba cannot prove those >= 0
                # and its negative-index wraparound stops vectorisation.
                srow = s[i * padded:i * padded + channels]
                if mode == _POW_075:  # the branch outside the loops lets them vectorise
                    for c in range(channels):
                        v = k + coef * srow[c]
                        q = np.sqrt(v)
                        dst[c] = _narrow(_widen(src[c]) / (q * np.sqrt(q)), dst[c])
                else:
                    for c in range(channels):
                        dst[c] = _narrow(_widen(src[c]) * _inv_pow(k + coef * srow[c], beta, mode, one), dst[c])


@numba.njit(inline="always")
def _squares_cl(x, m0, rows, padded, pre, sq):
    """sq[i * padded + pre + c] = x[m0 + i, c] ** 2."""
    channels = x.shape[1]
    for i in range(rows):
        src = x[m0 + i]
        dst = sq[i * padded + pre:i * padded + pre + channels]
        for c in range(channels):
            v = _widen(src[c])
            dst[c] = v * v


@numba.njit(inline="always")
def _window_sum_flat(buf, size, length, acc):
    """acc[j] = buf[j] + ... + buf[j + size - 1] (in that order) for j < length."""
    for j in range(length):
        acc[j] = buf[j]
    for d in range(1, size):
        for j in range(length):
            acc[j] += buf[j + d]


def _forward_nchw(x, out, size, params, mode, groups, tile):
    """NCHW: x, out (N, C, P); tiles of pixels, channel rows read contiguously,
    in ``groups`` runs of consecutive tiles (one scratch buffer per run)."""
    images, channels, pixels = x.shape
    tiles = (pixels + tile - 1) // tile
    total = images * tiles
    for group in numba.prange(groups):
        # Scratch per group of tiles: squares with zero padding rows (never
        # written), window sums.
        sq = np.zeros((channels + size - 1, tile), dtype=params.dtype)
        s = np.empty(tile, dtype=params.dtype)
        for task in range(group * total // groups, (group + 1) * total // groups):
            p0 = (task % tiles) * tile
            _forward_tile(x, out, size, params, mode, task // tiles, p0, min(tile, pixels - p0), sq, s)


@numba.njit(inline="always")
def _forward_tile(x, out, size, params, mode, img, p0, width, sq, s):
    channels = x.shape[1]
    pre = size // 2
    coef, k, beta, one = params[0], params[1], params[2], params[4]
    for c in range(channels):
        src = x[img, c, p0:p0 + width]
        dst = sq[pre + c]
        for i in range(width):
            v = _widen(src[i])
            dst[i] = v * v
    for c in range(channels):
        _window_sum(sq, c, size, width, s)
        src = x[img, c, p0:p0 + width]
        dst = out[img, c, p0:p0 + width]
        if mode == _POW_075:  # the branch outside the loops lets them vectorise
            for i in range(width):
                v = k + coef * s[i]
                q = np.sqrt(v)
                dst[i] = _narrow(_widen(src[i]) / (q * np.sqrt(q)), dst[i])
        else:
            for i in range(width):
                dst[i] = _narrow(_widen(src[i]) * _inv_pow(k + coef * s[i], beta, mode, one), dst[i])


@numba.njit(inline="always")
def _window_sum(rows, first, size, width, acc):
    """acc[:width] = rows[first] + ... + rows[first + size - 1] (in that order)."""
    row = rows[first]
    for i in range(width):
        acc[i] = row[i]
    for d in range(1, size):
        row = rows[first + d]
        for i in range(width):
            acc[i] += row[i]


def _backward_cl(x, grad_out, grad_in, size, params, mode, groups, block):
    """Channels-last backward: x, grad_out, grad_in (M, C); ``groups`` and
    ``block`` as in forward."""
    pixels, channels = x.shape
    pre = size // 2
    post = (size - 1) // 2
    padded = channels + size - 1
    coef, k, beta, coef2, one = params[0], params[1], params[2], params[3], params[4]
    for group in numba.prange(groups):
        sq = np.zeros(block * padded, dtype=params.dtype)
        t = np.zeros(block * padded, dtype=params.dtype)  # padded with post zeros before, pre after
        s = np.empty(block * padded, dtype=params.dtype)
        rs = np.empty(block * channels, dtype=params.dtype)
        stop = (group + 1) * pixels // groups
        for m0 in range(group * pixels // groups, stop, block):
            rows = min(block, stop - m0)
            _squares_cl(x, m0, rows, padded, pre, sq)
            _window_sum_flat(sq, size, rows * padded - (size - 1), s)
            for i in range(rows):
                src = x[m0 + i]
                gsrc = grad_out[m0 + i]
                srow = s[i * padded:i * padded + channels]
                trow = t[i * padded + post:i * padded + post + channels]
                rrow = rs[i * channels:(i + 1) * channels]
                if mode == _POW_075:
                    for c in range(channels):
                        v = k + coef * srow[c]
                        q = np.sqrt(v)
                        w = one / (v * (q * np.sqrt(q)))  # s ** -1.75: one division gives r and r / s
                        rrow[c] = w * v
                        trow[c] = _widen(gsrc[c]) * _widen(src[c]) * w
                else:
                    for c in range(channels):
                        v = k + coef * srow[c]
                        rc = _inv_pow(v, beta, mode, one)
                        rrow[c] = rc
                        trow[c] = _widen(gsrc[c]) * _widen(src[c]) * rc / v
            # s[i * padded + c] = sum of t over the channels whose window holds c: [c - post, c + pre].
            _window_sum_flat(t, size, rows * padded - (size - 1), s)
            for i in range(rows):
                src = x[m0 + i]
                gsrc = grad_out[m0 + i]
                dst = grad_in[m0 + i]
                urow = s[i * padded:i * padded + channels]
                rrow = rs[i * channels:(i + 1) * channels]
                for c in range(channels):
                    dst[c] = _narrow(_widen(gsrc[c]) * rrow[c] - coef2 * _widen(src[c]) * urow[c], dst[c])


def _backward_nchw(x, grad_out, grad_in, size, params, mode, groups, tile):
    """NCHW backward: x, grad_out, grad_in (N, C, P); ``groups`` as in forward."""
    images, channels, pixels = x.shape
    tiles = (pixels + tile - 1) // tile
    total = images * tiles
    for group in numba.prange(groups):
        sq = np.zeros((channels + size - 1, tile), dtype=params.dtype)
        t = np.zeros((channels + size - 1, tile), dtype=params.dtype)
        r = np.empty((channels, tile), dtype=params.dtype)
        acc = np.empty(tile, dtype=params.dtype)
        for task in range(group * total // groups, (group + 1) * total // groups):
            p0 = (task % tiles) * tile
            _backward_tile(x, grad_out, grad_in, size, params, mode, task // tiles, p0, min(tile, pixels - p0),
                           sq, t, r, acc)


@numba.njit(inline="always")
def _backward_tile(x, grad_out, grad_in, size, params, mode, img, p0, width, sq, t, r, acc):
    channels = x.shape[1]
    pre = size // 2
    post = (size - 1) // 2
    coef, k, beta, coef2, one = params[0], params[1], params[2], params[3], params[4]
    for c in range(channels):
        src = x[img, c, p0:p0 + width]
        dst = sq[pre + c]
        for i in range(width):
            v = _widen(src[i])
            dst[i] = v * v
    for c in range(channels):
        _window_sum(sq, c, size, width, acc)
        src = x[img, c, p0:p0 + width]
        gsrc = grad_out[img, c, p0:p0 + width]
        rrow = r[c]
        trow = t[post + c]
        if mode == _POW_075:
            for i in range(width):
                v = k + coef * acc[i]
                q = np.sqrt(v)
                w = one / (v * (q * np.sqrt(q)))  # s ** -1.75: one division gives r and r / s
                rrow[i] = w * v
                trow[i] = _widen(gsrc[i]) * _widen(src[i]) * w
        else:
            for i in range(width):
                v = k + coef * acc[i]
                rc = _inv_pow(v, beta, mode, one)
                rrow[i] = rc
                trow[i] = _widen(gsrc[i]) * _widen(src[i]) * rc / v
    # acc = sum of t over the channels whose window holds c: [c - post, c + pre].
    for c in range(channels):
        _window_sum(t, c, size, width, acc)
        src = x[img, c, p0:p0 + width]
        gsrc = grad_out[img, c, p0:p0 + width]
        dst = grad_in[img, c, p0:p0 + width]
        rrow = r[c]
        for i in range(width):
            dst[i] = _narrow(_widen(gsrc[i]) * rrow[i] - coef2 * _widen(src[i]) * acc[i], dst[i])


# Each kernel compiled twice: multi-threaded, and serial for small inputs.
_KERNELS = {
    (name, parallel): cached_kernel(fn, parallel, error_model="numpy")
    for name, fn in (("forward_cl", _forward_cl), ("forward_nchw", _forward_nchw),
                     ("backward_cl", _backward_cl), ("backward_nchw", _backward_nchw))
    for parallel in (False, True)
}


# --- Python side --------------------------------------------------------------------------------------

def _pow_mode(beta: float) -> int:
    return {0.75: _POW_075, 0.5: _POW_05, 1.0: _POW_1}.get(float(beta), _POW_GENERAL)


def _params(dtype: torch.dtype, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    compute = np.float64 if dtype == torch.float64 else np.float32
    return np.array([alpha / size, k, beta, 2.0 * alpha * beta / size, 1.0], dtype=compute)


def _is_channels_last(x: torch.Tensor) -> bool:
    """Whether the kernels read x as (N*H*W, C) rows (else as (N, C, H*W))."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself if NCHW- or channels-last-contiguous, else a copy in the memory
    format torch suggests for it (what its own ops would output)."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return torch.empty_like(x).copy_(x)


def _as_array(x: torch.Tensor, channels_last: bool) -> np.ndarray:
    """The kernels' numpy view of x (no copy): (M, C) or (N, C, P); bfloat16 as uint16 bits."""
    n, c, h, w = x.shape
    x = x.detach()
    if channels_last:
        x = x.permute(0, 2, 3, 1)
    if x.dtype == torch.bfloat16:
        array = x.view(torch.int16).numpy().view(np.uint16)
    else:
        array = x.numpy()
    view = array.reshape((n * h * w, c) if channels_last else (n, c, h * w))
    # A dense tensor always reshapes in place; a copy would lose the kernel's writes.
    if view.__array_interface__["data"][0] != array.__array_interface__["data"][0] or not view.flags.c_contiguous:
        raise RuntimeError(f"internal error: no contiguous view of a tensor with strides {x.stride()}")
    return view


def _launch(name: str, x: torch.Tensor, channels_last: bool, *arrays, size, alpha, beta, k) -> None:
    """Run kernel ``name``_cl or ``name``_nchw on the arrays (serial when small or on one thread)."""
    parallel = x.numel() >= _PARALLEL_MIN_VALUES and kernel_threads() > 1
    n, c, h, w = x.shape
    extra = ()
    if channels_last:
        units = n * h * w
        extra = (max(1, _BLOCK_VALUES // (c + size - 1)),)
    else:
        tile = min(h * w, max(16, _TILE_VALUES // (c + size - 1) // 16 * 16))
        units = n * ((h * w + tile - 1) // tile)
        extra = (tile,)
    kernel = _KERNELS[(f"{name}_{'cl' if channels_last else 'nchw'}", parallel)]
    if not parallel:
        kernel(*arrays, size, _params(x.dtype, size, alpha, beta, k), _pow_mode(beta), 1, *extra)
        return
    with torch_thread_count_kept():
        groups = max(1, min(units, _GROUPS_PER_THREAD * numba.get_num_threads()))
        kernel(*arrays, size, _params(x.dtype, size, alpha, beta, k), _pow_mode(beta), groups, *extra)


def _lrn_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    out = torch.empty_like(x)  # same strides as the dense x
    cl = _is_channels_last(x)
    _launch("forward", x, cl, _as_array(x, cl), _as_array(out, cl), size=size, alpha=alpha, beta=beta, k=k)
    return out


def _lrn_backward(x: torch.Tensor, grad_out: torch.Tensor, size: int, alpha: float, beta: float,
                  k: float) -> torch.Tensor:
    cl = _is_channels_last(x)
    grad_out = grad_out.to(x.dtype).contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    grad_in = torch.empty_like(x)
    _launch("backward", x, cl, _as_array(x, cl), _as_array(grad_out, cl), _as_array(grad_in, cl),
            size=size, alpha=alpha, beta=beta, k=k)
    return grad_in


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, size, alpha, beta, k):
        x = _dense(input)
        ctx.save_for_backward(x)
        ctx.hyper = (size, alpha, beta, k)
        return _lrn_forward(x, size, alpha, beta, k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return _lrn_backward(x, grad_out, *ctx.hyper), None, None, None, None


def _check_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")


def _kernel_applies(input: torch.Tensor, dtypes) -> bool:
    # Tracing first: a traced graph must not depend on the checks below.
    return (not is_exporting() and not torch.compiler.is_compiling() and type(input) is torch.Tensor
            and input.device.type == "cpu" and input.layout == torch.strided and input.dtype in dtypes
            and input.dim() == 4 and input.numel() > 0)


@torch.jit.unused
def _kernel_lrn(input: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    return _LRNFunction.apply(input, int(size), float(alpha), float(beta), float(k))


def local_response_norm(input: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """``torch.nn.functional.local_response_norm``, with the numba kernels for
    4-D CPU float32/bfloat16/float64 tensors (torch's otherwise)."""
    _check_size(size)
    if _kernel_applies(input, _KERNEL_DTYPES):
        return _kernel_lrn(input, size, alpha, beta, k)
    return F.local_response_norm(input, size, alpha, beta, k)


class LocalResponseNorm(torch.nn.LocalResponseNorm):
    """``torch.nn.LocalResponseNorm`` with the CPU kernels for 4-D float32 and
    bfloat16 input in eager mode; torch's layer everywhere else (see the module
    docstring). ``N x C x H x W`` in, the same shape, dtype and memory format out."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if _kernel_applies(input, _MODULE_DTYPES):
                return _kernel_lrn(input, self.size, self.alpha, self.beta, self.k)
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)
