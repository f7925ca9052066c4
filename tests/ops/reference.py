"""Slow, obviously-correct references for the pooling kernels (tests only)."""

from __future__ import annotations

import torch


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def clip_cells(roi, height, width):
    """SPEC/issue rule: clip to the map, x1 < x0 collapses to x0."""
    b, x0, y0, x1, y1 = (int(v) for v in roi)
    x0 = min(max(x0, 0), width - 1)
    y0 = min(max(y0, 0), height - 1)
    x1 = max(min(max(x1, 0), width - 1), x0)
    y1 = max(min(max(y1, 0), height - 1), y0)
    return b, x0, y0, x1, y1


def reference_roi_spp(features: torch.Tensor, rois, levels) -> torch.Tensor:
    """Loop over RoIs, levels and bins with SPEC section 1's bin formula."""
    _, channels, height, width = features.shape
    rows = []
    for roi in rois:
        b, x0, y0, x1, y1 = clip_cells(roi, height, width)
        h, w = y1 - y0 + 1, x1 - x0 + 1
        parts = []
        for n in levels:
            block = features.new_empty(channels, n, n)
            for i in range(n):
                hs, he = y0 + (i * h) // n, y0 + ceil_div((i + 1) * h, n)
                for j in range(n):
                    ws, we = x0 + (j * w) // n, x0 + ceil_div((j + 1) * w, n)
                    block[:, i, j] = features[b, :, hs:he, ws:we].amax(dim=(1, 2))
            parts.append(block.flatten())
        rows.append(torch.cat(parts))
    if not rows:
        return features.new_zeros(0, channels * sum(n * n for n in levels))
    return torch.stack(rows)
