import pytest
import torch

from sppnet.models.svm import SVMConfig, train_linear_svms
from sppnet.ops import LocalResponseNorm, roi_spp


@pytest.mark.parametrize("threads", [1, 2])
def test_parallel_kernels_leave_torchs_thread_count_alone(threads):
    # numba's OpenMP layer used to reset the caller's OpenMP threads (torch's)
    # to numba's pool size at the first parallel kernel.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        generator = torch.Generator().manual_seed(0)
        LocalResponseNorm(5, 1e-4, 0.75, 1.0)(torch.randn(1, 96, 200, 200, generator=generator))  # parallel size
        assert torch.get_num_threads() == threads
        features = torch.randn(1, 64, 40, 50, generator=generator, requires_grad=True)
        rois = torch.tensor([[0, 0, 0, 49, 39]] * 400)
        roi_spp(features, rois, (6, 3, 2, 1)).sum().backward()  # >= 2**20 outputs: parallel both ways
        assert torch.get_num_threads() == threads
        x = torch.randn(60, 5, generator=generator, dtype=torch.float64)
        y = torch.where(torch.rand(60, 2, generator=generator) < 0.5, -1.0, 1.0).double()
        train_linear_svms(x, y, SVMConfig())
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
