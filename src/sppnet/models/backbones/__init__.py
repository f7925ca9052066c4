"""Conv trunks. Each has ``features`` (an ``nn.Sequential``), ``out_channels``
and ``geometry`` (stride and receptive-field offsets, derived from its layers).
``build_backbone(name, width, weights)`` builds any of them by name."""

from sppnet.models.backbones.paper import Convnet5, Overfeat5, Overfeat7
from sppnet.models.backbones.registry import BACKBONES, build_backbone
from sppnet.models.backbones.torchvision_trunks import TorchvisionTrunk
from sppnet.models.backbones.zf5 import ZF5

__all__ = ["BACKBONES", "Convnet5", "Overfeat5", "Overfeat7", "TorchvisionTrunk", "ZF5", "build_backbone"]
