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



_TOY = """
import numba
import numpy as np

def thread_ids(out):
    for i in numba.prange(out.shape[0]):
        out[i] = numba.get_thread_id()
"""

_RUN = """
import sys
import numba
import numpy as np
sys.path.insert(0, sys.argv[1])
from sppnet.ops.threads import cached_kernel
import toy_kernels

builds = {parallel: cached_kernel(toy_kernels.thread_ids, parallel) for parallel in (False, True)}
numba.set_num_threads(2)
for parallel in [p == "parallel" for p in sys.argv[2:]]:  # compiled (or loaded) in this order
    out = np.full(64, -1, dtype=np.int64)
    builds[parallel](out)
    print("parallel" if parallel else "serial", sorted(set(out.tolist())))
"""


def test_serial_and_parallel_builds_are_cached_apart(tmp_path):
    # numba's on-disk cache files a function's machine code by name and
    # signature, not by compile options: the serial and multi-threaded builds
    # of one kernel shared an entry, and the first one compiled ran for both
    # (every "parallel" LRN and pooling kernel ran on one core).
    import os
    import subprocess
    import sys

    (tmp_path / "toy_kernels.py").write_text(_TOY)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_NUM_THREADS": "2"}

    def run(*order):
        result = subprocess.run([sys.executable, "-c", _RUN, str(tmp_path), *order], env=env, check=True,
                                capture_output=True, text=True, timeout=300)
        return result.stdout.splitlines()

    first = run("serial", "parallel")  # compiled, serial first
    again = run("parallel", "serial")  # both read from the cache
    for lines in (first, again):
        assert sorted(lines) == ["parallel [0, 1]", "serial [0]"], lines


def test_every_kernel_is_built_under_its_own_name():
    from sppnet.ops import _spp_cpu
    from sppnet.ops.lrn import _KERNELS

    builds = [(_spp_cpu.spp_forward_serial, False), (_spp_cpu.spp_forward_parallel, True),
              (_spp_cpu.spp_backward_serial, False), (_spp_cpu.spp_backward_parallel, True)]
    builds += [(kernel, parallel) for (_, parallel), kernel in _KERNELS.items()]
    for kernel, parallel in builds:
        assert kernel.py_func.__qualname__.endswith("_parallel" if parallel else "_serial")
        assert kernel.targetoptions.get("parallel", False) == parallel
    assert len({kernel.py_func.__qualname__ for kernel, _ in builds}) == len(builds)
