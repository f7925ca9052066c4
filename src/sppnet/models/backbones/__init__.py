"""Conv trunks. Each has ``features`` (an ``nn.Sequential``), ``out_channels``
and ``geometry`` (stride and receptive-field offsets, derived from its layers)."""

from sppnet.models.backbones.zf5 import ZF5

__all__ = ["ZF5"]
