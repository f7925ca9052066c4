"""Operators shared by every pipeline: pyramid pooling, image-to-cell
geometry, box utilities, local response normalisation."""

from sppnet.ops.boxes import (
    BoxCoder,
    batched_nms,
    box_area,
    box_iou,
    check_boxes,
    class_nms,
    fuse_detections,
    clip_boxes,
    mirror_boxes,
    nms,
    remove_small_boxes,
    vote_boxes,
)
from sppnet.ops.geometry import CELL_RULES, FeatureGeometry, boxes_to_cells, boxes_to_rois, feature_geometry
from sppnet.ops.lrn import LocalResponseNorm, local_response_norm
from sppnet.ops.roi_spp import roi_spp, spp_output_size
from sppnet.ops.spp import SpatialPyramidPooling, spatial_pyramid_pool

__all__ = [
    "BoxCoder",
    "CELL_RULES",
    "FeatureGeometry",
    "LocalResponseNorm",
    "SpatialPyramidPooling",
    "batched_nms",
    "box_area",
    "box_iou",
    "boxes_to_cells",
    "boxes_to_rois",
    "check_boxes",
    "class_nms",
    "fuse_detections",
    "clip_boxes",
    "feature_geometry",
    "local_response_norm",
    "mirror_boxes",
    "nms",
    "remove_small_boxes",
    "roi_spp",
    "spatial_pyramid_pool",
    "spp_output_size",
    "vote_boxes",
]
