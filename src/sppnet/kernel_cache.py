"""The process's oneDNN primitive cache: large enough for every image size.

On CPU, PyTorch runs convolutions through oneDNN, which compiles a kernel
(a "primitive") for each layer, direction and input shape and keeps the
last 1024 in a cache. sppnet's detectors train and test on whole images of
their own sizes at several scales: each mini-batch of the in-context Fast
R-CNN stage pads two images, each at a random train scale, to one shape,
and every shape needs ~20 primitives (five convs forward and backward, and
their reorders), so with 1024 most conv calls compiled their kernel again:
11.5% of a training step went to ``dnnl_primitive_create`` (py-spy). With
room for 65,536 the same 1500 training iterations take 65 s instead of
74 s, with the same losses and the same peak memory
(``benchmarks/training_layout.py``; benchmarks/RESULTS.md, "Training speed").

oneDNN reads ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` when it creates its first
primitive, so importing ``sppnet`` sets it (unless the environment already
does) before any conv has run; in a process that ran a conv before
importing sppnet the setting comes too late and oneDNN keeps its default.
"""

from __future__ import annotations

import os

__all__ = ["keep_compiled_kernels", "CAPACITY"]

CAPACITY = 65536
_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def keep_compiled_kernels() -> str:
    """Ask oneDNN for a cache of ``CAPACITY`` primitives unless the
    environment chose a size; returns the value in effect for oneDNN."""
    return os.environ.setdefault(_VARIABLE, str(CAPACITY))
