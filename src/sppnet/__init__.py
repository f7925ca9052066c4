"""sppnet: spatial pyramid pooling networks for classification and detection."""

from sppnet.ops import SpatialPyramidPooling, roi_spp, spatial_pyramid_pool

__version__ = "0.1.0"
__all__ = ["SpatialPyramidPooling", "roi_spp", "spatial_pyramid_pool", "__version__"]
