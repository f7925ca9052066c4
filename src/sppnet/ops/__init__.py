"""Operators shared by every pipeline: pooling, box geometry, box utilities."""

from sppnet.ops.roi_spp import roi_spp, spp_output_size
from sppnet.ops.spp import SpatialPyramidPooling, spatial_pyramid_pool

__all__ = ["roi_spp", "spp_output_size", "spatial_pyramid_pool", "SpatialPyramidPooling"]
