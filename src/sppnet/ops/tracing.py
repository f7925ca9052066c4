"""Whether the ops are being traced for export (TorchScript or ONNX).

Shapes: none; this module only answers one question.

While ``torch.jit.trace`` or ``torch.onnx.export`` records a graph, the ops
take their traceable paths: sizes are read from the tensors' shapes as
tensors (so the graph keeps H, W and R dynamic), data-dependent validation is
skipped (a recorded graph cannot raise), and pooling runs through
torchvision's ``roi_pool`` (ONNX ``MaxRoiPool``) instead of the numba kernel,
which the tracer cannot see into.
"""

from __future__ import annotations

import torch

__all__ = ["is_exporting", "shape_of"]


def is_exporting() -> bool:
    """True inside ``torch.jit.trace``/``script``, ``torch.onnx.export`` and
    ``torch.export``."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting())


def shape_of(x: torch.Tensor) -> torch.Tensor:
    """``x.shape`` as an int64 tensor that a traced graph recomputes for every
    input (ONNX ``Shape``), never frozen into a constant."""
    return torch._shape_as_tensor(x)
