"""The CPU inference fast path: bfloat16 autocast and channels-last convs.

On CPUs with AMX or AVX-512 bf16 (this project's machines), matrix products
in bfloat16 run several times faster than in float32, and oneDNN's bf16 convs
want channels-last tensors. ``precision="bf16"`` turns both on for inference;
``"fp32"`` is the exact path. ``benchmarks/RESULTS.md`` gives the measured
speed and mAP of both (``sppnet bench detect``). The paper trunks make their
activations channels-last in either precision, training included
(``PaperTrunk.forward``); ``prepare`` and ``as_input`` also cover the
weights and the other trunks.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from torch import nn

__all__ = ["PRECISIONS", "check_precision", "autocast", "prepare", "as_input", "cpu_flags", "training_precision",
           "gradients_finite"]

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device | str = "cpu"):
    """bfloat16 autocast for ``"bf16"``; a no-op context for ``"fp32"``."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=check_precision(precision) == "bf16")


def prepare(module: nn.Module, precision: str) -> nn.Module:
    """Channels-last weights for the bf16 path, contiguous ones for fp32 (in place)."""
    memory_format = torch.channels_last if check_precision(precision) == "bf16" else torch.contiguous_format
    return module.to(memory_format=memory_format)


def as_input(images: torch.Tensor, precision: str) -> torch.Tensor:
    """A conv input batch in the memory format ``prepare`` chose."""
    if check_precision(precision) == "bf16":
        return images.contiguous(memory_format=torch.channels_last)
    return images


@cache
def cpu_flags() -> tuple[str | None, frozenset[str]]:
    """The CPU's model name and feature flags, from /proc/cpuinfo's first core
    (None and no flags where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, frozenset()
    first = text.split("\n\n", 1)[0]
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
    return fields.get("model name"), frozenset(fields.get("flags", "").split())


def training_precision(precision: str, log=print) -> str:
    """The precision a training stage asked for ``precision`` runs in: bf16
    only on CPUs with bfloat16 instructions (AVX-512 BF16 or AMX), where it is
    the faster path; elsewhere oneDNN would emulate it, slower than float32,
    so the stage trains in float32 and says so."""
    if check_precision(precision) == "bf16" and not cpu_flags()[1] & {"avx512_bf16", "amx_bf16"}:
        log("bf16 training asked for, but this CPU has no bfloat16 instructions (AVX-512 BF16, AMX): "
            "training in float32")
        return "fp32"
    return precision


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimizer would apply is finite (one sum per
    tensor: a NaN or infinity anywhere in it makes the sum non-finite)."""
    sums = [p.grad.sum() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return not sums or bool(torch.isfinite(torch.stack(sums)).all())
