"""Backbones by name: ``build_backbone("zf5", width=0.25)``.

Every backbone returned has ``features`` (``nn.Sequential``), ``out_channels``
and ``geometry`` (``FeatureGeometry``), and maps ``Tensor[N, 3, H, W]`` to
``Tensor[N, out_channels, h, w]``.

- Paper trunks (trained from scratch or from a local file of their own
  weights): ``zf5``, ``convnet5``, ``overfeat5``, ``overfeat7``; ``width``
  scales their channels.
- torchvision trunks (full width only; local pretrained weights):
  ``alexnet``, ``vgg16``, ``resnet18``, ``resnet50``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from sppnet.models.backbones.paper import Convnet5, Overfeat5, Overfeat7
from sppnet.models.backbones.torchvision_trunks import TORCHVISION_TRUNKS, TorchvisionTrunk, load_weights_file
from sppnet.models.backbones.zf5 import ZF5

__all__ = ["BACKBONES", "PAPER_BACKBONES", "build_backbone"]

PAPER_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "zf5": ZF5,
    "zf5-bn": lambda width=1.0: ZF5(width=width, batch_norm=True),  # a modern variant, named as such
    "convnet5": Convnet5,
    "overfeat5": Overfeat5,
    "overfeat7": Overfeat7,
}


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(weights_path: str | Path | None = None) -> nn.Module:
        return TorchvisionTrunk(name, weights_path)

    build.__name__ = build.__qualname__ = f"TorchvisionTrunk[{name}]"
    return build


# name -> constructor: paper trunks take ``width``, torchvision trunks take
# ``weights_path``; ``build_backbone`` is the uniform entry point.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    **PAPER_BACKBONES,
    **{name: _torchvision(name) for name in TORCHVISION_TRUNKS},
}


def build_backbone(name: str, width: float = 1.0, weights: str | Path | None = None) -> nn.Module:
    """Build the conv trunk called ``name`` (one of ``BACKBONES``).

    Args:
        name: backbone name, e.g. ``"zf5"`` or ``"resnet50"``.
        width: channel multiplier for the paper trunks; must be 1 for the
            torchvision trunks.
        weights: optional local weights file (``.safetensors`` or a
            ``torch.save``d state_dict), loaded strictly: for a paper trunk,
            that trunk's own state_dict at this ``width``; for a torchvision
            trunk, the full torchvision model's or the trunk's.

    Raises:
        ValueError: unknown name, ``width != 1`` for a torchvision trunk, or a
            weights file that cannot be read or does not match (the message
            names the file and the missing/unexpected keys).
        FileNotFoundError: ``weights`` does not exist.
    """
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    if name in PAPER_BACKBONES:
        trunk = PAPER_BACKBONES[name](width=width)
        if weights is not None:
            load_weights_file(trunk, weights, f"{name} at width {width}")
        return trunk
    if width != 1:
        raise ValueError(f"width={width} is not supported for the torchvision trunk {name!r}; only 1.0")
    return BACKBONES[name](weights)
