"""Multi-threaded CPU kernels of the pyramid pooling op (numba).

Shapes: N images, C channels, H x W map, K RoIs, L levels, D = C * sum(n*n).

The forward kernel reads a channels-last copy of the map, so the max over a
bin is a vectorised loop over contiguous channels. Only levels that cannot be
derived are scanned cell by cell: with SPEC section 1's bins, bin i of level n
is exactly the union of bins f*i .. f*i+f-1 of level f*n, so for (6, 3, 2, 1)
the map is scanned once (level 6) and the coarser levels are maxima of
level-6 bins. Ties go to the smallest flat cell index (row-major), which is
the cell torchvision's roi_pool picks, so gradients land on the same cell.
NaN propagates: a bin holding a NaN pools to NaN.

Inputs are validated and clipped by ``roi_spp``; these kernels trust them.
"""

from __future__ import annotations

import numba
import numpy as np

from sppnet.ops.threads import cached_kernel



@numba.njit(inline="always")
def _scan_bin(feat, img, hs, he, ws, we, best):
    """Channel-wise max over cells [hs, he) x [ws, we) into best (C,)."""
    channels = feat.shape[3]
    for c in range(channels):
        best[c] = -np.inf
    for y in range(hs, he):
        for x in range(ws, we):
            for c in range(channels):
                v = feat[img, y, x, c]
                m = best[c]
                best[c] = v if (v > m) | (v != v) else m


@numba.njit(inline="always")
def _scan_bin_argmax(feat, img, hs, he, ws, we, best, where):
    """As _scan_bin, also recording the flat index y * W + x of each maximum
    (the first in row-major order on ties)."""
    channels = feat.shape[3]
    width = feat.shape[2]
    first = hs * width + ws
    for c in range(channels):
        best[c] = -np.inf
        where[c] = first
    for y in range(hs, he):
        for x in range(ws, we):
            cell = y * width + x
            for c in range(channels):
                v = feat[img, y, x, c]
                m = best[c]
                take = (v > m) | (v != v)
                best[c] = v if take else m
                where[c] = cell if take else where[c]



@numba.njit(inline="always")
def _merge_bin(src, best):
    for c in range(best.shape[0]):
        v = src[c]
        m = best[c]
        best[c] = v if (v > m) | (v != v) else m


@numba.njit(inline="always")
def _merge_bin_argmax(src, src_where, best, where):
    # Ties go to the smaller flat index: the cell a row-major scan meets first.
    for c in range(best.shape[0]):
        v = src[c]
        a = src_where[c]
        m = best[c]
        w = where[c]
        take = (v > m) | ((v == m) & (a < w)) | (v != v)
        best[c] = v if take else m
        where[c] = a if take else w


@numba.njit(inline="always")
def _transpose(src, first_bin, bins, dst, offset):
    """dst[offset + c * bins + b] = src[first_bin + b, c] for all b, c."""
    for b in range(bins):
        for c in range(src.shape[1]):
            dst[offset + c * bins + b] = src[first_bin + b, c]


def _spp_forward(feat, rois, levels, order, sources, bin_offsets, out_offsets, out, argmax, store_argmax):
    """Pool every RoI at every level.

    feat: (N, H, W, C) float; rois: (K, 5) int64 (batch, x0, y0, x1, y1),
    inclusive cells already clipped to the map with x1 >= x0, y1 >= y0.
    levels: (L,) bins per side, in output order; order: (L,) the order to
    compute them in (finest first); sources: (L,) index of the finer level a
    level is derived from, or -1 to scan the map. bin_offsets: (L,) offset of
    each level in the per-RoI (bins, C) scratch; out_offsets: (L,) offset of
    each level in an output row. out: (K, D) float; argmax: (K, D) integer flat
    cell index y * W + x (written only when store_argmax).
    """
    num_rois = rois.shape[0]
    channels = feat.shape[3]
    num_levels = levels.shape[0]
    total_bins = 0
    for level in range(num_levels):
        total_bins += levels[level] * levels[level]
    for k in numba.prange(num_rois):
        img = rois[k, 0]
        x0 = rois[k, 1]
        y0 = rois[k, 2]
        span_w = rois[k, 3] - x0 + 1
        span_h = rois[k, 4] - y0 + 1
        vals = np.empty((total_bins, channels), dtype=feat.dtype)
        cells = np.empty((total_bins, channels), dtype=argmax.dtype)
        for li in range(num_levels):
            level = order[li]
            n = levels[level]
            boff = bin_offsets[level]
            src = sources[level]
            if src < 0:
                for i in range(n):
                    hs = y0 + (i * span_h) // n
                    he = y0 + ((i + 1) * span_h + n - 1) // n
                    for j in range(n):
                        ws = x0 + (j * span_w) // n
                        we = x0 + ((j + 1) * span_w + n - 1) // n
                        b = boff + i * n + j
                        if store_argmax:
                            _scan_bin_argmax(feat, img, hs, he, ws, we, vals[b], cells[b])
                        else:
                            _scan_bin(feat, img, hs, he, ws, we, vals[b])
            else:
                finer = levels[src]
                f = finer // n
                soff = bin_offsets[src]
                for i in range(n):
                    for j in range(n):
                        b = boff + i * n + j
                        sub = soff + (f * i) * finer + f * j
                        vals[b] = vals[sub]
                        if store_argmax:
                            cells[b] = cells[sub]
                        for u in range(f):
                            for t in range(f):
                                sub = soff + (f * i + u) * finer + (f * j + t)
                                if store_argmax:
                                    _merge_bin_argmax(vals[sub], cells[sub], vals[b], cells[b])
                                else:
                                    _merge_bin(vals[sub], vals[b])
        # Transpose each level's (bins, C) scratch into the documented (C, n, n) block.
        for level in range(num_levels):
            nn = levels[level] * levels[level]
            boff = bin_offsets[level]
            ooff = out_offsets[level]
            _transpose(vals, boff, nn, out[k], ooff)
            if store_argmax:
                _transpose(cells, boff, nn, argmax[k], ooff)

def _spp_backward(grad_out, argmax, batch_index, channel_of_column, grad_partial):
    """Scatter output gradients to their argmax cells.

    grad_out, argmax: (K, D); batch_index: (K,) int64; channel_of_column: (D,)
    int64; grad_partial: (T, N, C, H * W) zeros, one buffer per task so that
    tasks never write the same memory; the caller sums them over T.
    """
    tasks = grad_partial.shape[0]
    num_rois = grad_out.shape[0]
    width = grad_out.shape[1]
    for t in numba.prange(tasks):
        acc = grad_partial[t]
        for k in range(t * num_rois // tasks, (t + 1) * num_rois // tasks):
            img = batch_index[k]
            for d in range(width):
                acc[img, channel_of_column[d], argmax[k, d]] += grad_out[k, d]


# Each kernel is compiled twice: multi-threaded for large inputs, and serial
# for small ones (a training batch of whole-map SPP), where waking a thread
# pool costs more than the work and competes with torch's own threads.
spp_forward_parallel = cached_kernel(_spp_forward, parallel=True)
spp_forward_serial = cached_kernel(_spp_forward, parallel=False)
spp_backward_parallel = cached_kernel(_spp_backward, parallel=True)
spp_backward_serial = cached_kernel(_spp_backward, parallel=False)
