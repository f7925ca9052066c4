"""The three detectors as ``nn.Module`` models with torchvision's detection
contract, ``model(images, proposals, targets=None)``: images float ``[3, H,
W]`` in [0, 1], proposals ``(R, 4)`` xyxy in their pixels; in eval mode a list
of ``{"boxes", "labels", "scores"}``, one per image.

- ``SPPNet``: conv5 once per image and scale, every window pooled from it.
- ``RCNN``: every window warped through the whole network.
- ``FastRCNN``: also trains end to end from the contract (``targets`` given
  in training mode: ``{"loss_classifier", "loss_box_reg"}``). SPP-net and
  R-CNN train in stages (fine-tuning, SVMs with hard negatives, box
  regression; ``sppnet.engine``), so they have no training forward.

Shared parts: ``sppnet.models.windows`` (the scale-pyramid pooler: each
window's scale, its cells, ``roi_spp``; ``image_maps``), ``postprocess``
(per-class NMS, regression, clipping), ``sppnet.models.scoring`` (SVMs or
softmax), ``sppnet.ops.BoxCoder``.
"""

from sppnet.models.detection.fast_rcnn import FastRCNN
from sppnet.models.detection.rcnn import RCNN
from sppnet.models.detection.sppnet import SPPNet

__all__ = ["SPPNet", "RCNN", "FastRCNN"]
