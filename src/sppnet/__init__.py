"""sppnet: spatial pyramid pooling networks for classification and detection."""

from sppnet.allocator import keep_freed_memory
from sppnet.kernel_cache import keep_compiled_kernels

# Large freed tensors stay in the process instead of going back to the kernel
# (see sppnet.allocator; SPPNET_SYSTEM_ALLOCATOR=1 keeps glibc's defaults).
keep_freed_memory()
# oneDNN keeps the conv kernels it compiled for every image size (see
# sppnet.kernel_cache; ONEDNN_PRIMITIVE_CACHE_CAPACITY in the environment wins).
keep_compiled_kernels()

from sppnet.ops import SpatialPyramidPooling, roi_spp, spatial_pyramid_pool

__version__ = "0.1.0"
__all__ = ["SpatialPyramidPooling", "roi_spp", "spatial_pyramid_pool", "__version__"]
