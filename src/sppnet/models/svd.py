"""Truncated SVD of fully connected layers (Fast R-CNN, SPEC section 6).

A layer y = W x + b with W (out, in) becomes two: y = U_r (S_r V_r^T x) + b,
a bias-free (in -> r) layer with weight S_r V_r^T and an (r -> out) layer
with weight U_r and the original bias. Multiply-adds fall from in * out to
r * (in + out); Fast R-CNN keeps 1024 singular values of fc6 and 256 of fc7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["truncated_svd", "compress_fc", "compressed_ranks"]


def truncated_svd(linear: nn.Linear, rank: int) -> nn.Sequential:
    """``linear`` as two layers through ``rank`` singular values."""
    out_features, in_features = linear.weight.shape
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank < min(in_features, out_features):
        raise ValueError(f"rank must be an int in [1, {min(in_features, out_features) - 1}] for a "
                         f"{in_features} -> {out_features} layer (a larger rank saves nothing), got {rank!r}")
    weight = linear.weight.detach().double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    first = nn.Linear(in_features, rank, bias=False)
    second = nn.Linear(rank, out_features, bias=linear.bias is not None)
    with torch.no_grad():
        first.weight.copy_(s[:rank, None] * vh[:rank])
        second.weight.copy_(u[:, :rank])
        if linear.bias is not None:
            second.bias.copy_(linear.bias)
    return nn.Sequential(first, second).to(linear.weight.dtype)


def compress_fc(head: nn.Module, ranks: Sequence[int]) -> nn.Module:
    """Replace the linear layer of ``head.fc6`` and ``head.fc7`` (each an
    ``nn.Sequential`` starting with it) by its truncated SVD, in place."""
    if len(ranks) != 2:
        raise ValueError(f"ranks must give fc6's and fc7's rank, got {list(ranks)}")
    for name, rank in zip(("fc6", "fc7"), ranks):
        block = getattr(head, name)
        if not isinstance(block[0], nn.Linear):
            raise ValueError(f"{name} is already compressed")
        block[0] = truncated_svd(block[0], rank)
    return head


def compressed_ranks(head: nn.Module) -> tuple[int, int] | None:
    """The (fc6, fc7) ranks of a compressed head, None for an uncompressed one."""
    if isinstance(head.fc6[0], nn.Linear):
        return None
    return head.fc6[0][0].out_features, head.fc7[0][0].out_features
