import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F
from torchvision.ops import roi_pool

from sppnet.ops import roi_spp, spp_output_size
from sppnet.ops.roi_spp import _torchvision_spp, _clip_rois

from .reference import reference_roi_spp

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def torchvision_pyramid(features, rois, levels):
    return torch.cat([roi_pool(features, rois.to(features.dtype), (n, n), 1.0).flatten(1) for n in levels], 1)


def random_rois(num, n_images, height, width, generator, inside=True):
    if inside:
        x = torch.randint(0, width, (num, 2), generator=generator).sort(1).values
        y = torch.randint(0, height, (num, 2), generator=generator).sort(1).values
    else:
        x = torch.randint(-8, width + 8, (num, 2), generator=generator)
        y = torch.randint(-8, height + 8, (num, 2), generator=generator)
    batch = torch.randint(0, n_images, (num,), generator=generator)
    return torch.stack([batch, x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (4, 3, 2, 1), (7,), (1,), (3, 6), (5, 5, 2)])
def test_matches_torchvision_roi_pool_per_level(device, levels):
    g = torch.Generator().manual_seed(sum(levels))
    features = torch.randn(3, 5, 19, 23, generator=g).to(device)
    rois = random_rois(60, 3, 19, 23, g).to(device)
    out = roi_spp(features, rois, levels)
    assert out.shape == (60, spp_output_size(5, levels))
    assert torch.equal(out, torchvision_pyramid(features, rois, levels))


def test_hand_worked_2x3_map_at_level_6():
    # rows of the 6 bins: [0,1) x3, [1,2) x3; columns: [0,1) [0,1) [1,2) [1,2) [2,3) [2,3)
    features = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).view(1, 1, 2, 3)
    out = roi_spp(features, torch.tensor([[0, 0, 0, 2, 1]]), (6,)).view(6, 6)
    row = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    expected = torch.tensor([row] * 3 + [[v + 3 for v in row]] * 3)
    assert torch.equal(out, expected)


def test_hand_worked_13x13_and_11x11_maps():
    # Cell value = row * 100 + column, so a bin's max is its bottom-right cell.
    def grid(size):
        r = torch.arange(size, dtype=torch.float32)
        return (r[:, None] * 100 + r[None, :]).view(1, 1, size, size)

    # 13 cells, n = 6: bins [0,3) [2,5) [4,7) [6,9) [8,11) [10,13) -> last cells 2 4 6 8 10 12
    last = torch.tensor([2.0, 4, 6, 8, 10, 12])
    out = roi_spp(grid(13), torch.tensor([[0, 0, 0, 12, 12]]), (6, 1))
    assert torch.equal(out[0, :36].view(6, 6), last[:, None] * 100 + last[None, :])
    assert out[0, 36].item() == 1212.0
    # 11 cells, n = 4 (the paper's window/stride recipe gives 5 bins here):
    # bins [0,3) [2,6) [5,9) [8,11) -> last cells 2 5 8 10
    last = torch.tensor([2.0, 5, 8, 10])
    out = roi_spp(grid(11), torch.tensor([[0, 0, 0, 10, 10]]), (4,))
    assert torch.equal(out.view(4, 4), last[:, None] * 100 + last[None, :])


def test_roi_inside_map_offsets_bins():
    features = torch.arange(64, dtype=torch.float64).view(1, 1, 8, 8)
    # RoI columns 2..4, rows 3..6 at level 2: rows [3,5) [4,7), cols [2,4) [3,5)
    out = roi_spp(features, torch.tensor([[0, 2, 3, 4, 6]]), (2,))
    expected = torch.tensor([4 * 8 + 3, 4 * 8 + 4, 6 * 8 + 3, 6 * 8 + 4], dtype=torch.float64)
    assert torch.equal(out[0], expected)


def test_whole_map_matches_adaptive_max_pool():
    g = torch.Generator().manual_seed(1)
    for h, w in [(1, 1), (1, 7), (2, 3), (5, 5), (13, 13), (11, 17), (40, 3)]:
        features = torch.randn(2, 4, h, w, generator=g)
        rois = torch.tensor([[0, 0, 0, w - 1, h - 1], [1, 0, 0, w - 1, h - 1]])
        levels = (6, 3, 2, 1)
        expected = torch.cat([F.adaptive_max_pool2d(features, n).flatten(1) for n in levels], 1)
        assert torch.equal(roi_spp(features, rois, levels), expected)


def test_outside_cells_are_clipped_and_inverted_spans_collapse():
    features = torch.randn(1, 3, 6, 9, generator=torch.Generator().manual_seed(2))
    levels = (3, 1)
    cases = {
        (0, -5, -5, 3, 2): (0, 0, 0, 3, 2),  # partly outside -> clipped
        (0, 7, 4, 30, 40): (0, 7, 4, 8, 5),
        (0, 20, 20, 30, 30): (0, 8, 5, 8, 5),  # entirely outside -> the nearest corner cell
        (0, 5, 3, 2, 1): (0, 5, 3, 5, 3),  # x1 < x0, y1 < y0 -> one cell at (x0, y0)
    }
    for roi, clipped in cases.items():
        got = roi_spp(features, torch.tensor([roi]), levels)
        assert torch.equal(got, roi_spp(features, torch.tensor([clipped]), levels)), roi
        assert torch.equal(got, reference_roi_spp(features, [roi], levels)), roi


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    channels=st.integers(1, 5),
    levels=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    inside=st.booleans(),
)
def test_property_matches_slow_reference(height, width, channels, levels, seed, inside):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, channels, height, width, generator=g)
    rois = random_rois(5, 2, height, width, g, inside=inside)
    out = roi_spp(features, rois, levels)
    assert torch.equal(out, reference_roi_spp(features, rois.tolist(), levels))
    if inside:
        assert torch.equal(out, torchvision_pyramid(features, rois, levels))


def test_float_rois_round_like_torchvision():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(1, 2, 10, 12, generator=g)
    rois = torch.tensor([[0, 0.4, 1.5, 7.49, 8.5], [0, 2.5, 0.0, 10.6, 3.2]])
    assert torch.equal(roi_spp(features, rois, (3, 1)), torchvision_pyramid(features, rois, (3, 1)))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    features = torch.randn(2, 3, 7, 9, dtype=torch.float64, generator=g).requires_grad_()
    rois = torch.tensor([[0, 0, 0, 8, 6], [1, 2, 1, 5, 5], [0, 3, 3, 3, 3], [1, -2, 4, 20, 9]])
    assert torch.autograd.gradcheck(lambda f: roi_spp(f, rois, (3, 2, 1)), (features,))


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_matches_torchvision(device):
    # Integer-valued upstream gradients make every sum exact, so the order in
    # which contributions are added cannot matter: the gradients must be equal.
    g = torch.Generator().manual_seed(5)
    features = torch.randn(2, 4, 15, 11, generator=g).to(device)
    rois = random_rois(40, 2, 15, 11, g).to(device)
    levels = (6, 3, 2, 1)
    seed = torch.randint(-3, 4, (40, spp_output_size(4, levels)), generator=g).float().to(device)
    grads = []
    for pool in (roi_spp, torchvision_pyramid):
        x = features.clone().requires_grad_()
        pool(x, rois, levels).backward(seed)
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_ties_send_gradient_to_first_cell_in_row_major_order():
    features = torch.zeros(1, 1, 4, 4, requires_grad=True)
    roi_spp(features, torch.tensor([[0, 0, 0, 3, 3]]), (2, 1)).sum().backward()
    expected = torch.zeros(4, 4)
    expected[0, 0] = 2  # level-2 bin (0,0) and level 1
    expected[0, 2] = expected[2, 0] = expected[2, 2] = 1
    assert torch.equal(features.grad[0, 0], expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    g = torch.Generator().manual_seed(6)
    features = torch.randn(1, 3, 9, 9, generator=g).to(dtype)
    rois = random_rois(10, 1, 9, 9, g)
    out = roi_spp(features, rois, (6, 3, 2, 1))
    assert out.dtype == dtype
    # max is exact in any dtype: pooling in float64 and casting back is the reference
    assert torch.equal(out, roi_spp(features.double(), rois, (6, 3, 2, 1)).to(dtype))
    x = features.clone().requires_grad_()
    roi_spp(x, rois, (2,)).sum().backward()
    assert x.grad.dtype == dtype and x.grad.shape == x.shape


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(2, 8, 12, 10, generator=g)
    rois = random_rois(20, 2, 10, 12, g)
    expected = reference_roi_spp(base.transpose(2, 3).contiguous(), rois.tolist(), (3, 1))
    assert torch.equal(roi_spp(base.transpose(2, 3), rois, (3, 1)), expected)
    channels_last = base.contiguous(memory_format=torch.channels_last)
    assert torch.equal(roi_spp(channels_last, rois, (3, 1)), roi_spp(base, rois, (3, 1)))
    assert torch.equal(roi_spp(base[:, ::2], rois, (2,)), roi_spp(base[:, ::2].contiguous(), rois, (2,)))


def test_nan_propagates():
    features = torch.zeros(1, 2, 4, 4)
    features[0, 1, 3, 3] = float("nan")
    out = roi_spp(features, torch.tensor([[0, 0, 0, 3, 3]]), (2, 1)).view(-1)
    # channel 1, level 2: only bin (1, 1) holds the NaN; level 1 does too
    level2 = out[:8].view(2, 2, 2)
    assert torch.isnan(level2[1, 1, 1]) and not torch.isnan(level2[1, 0, 0]) and not torch.isnan(level2[0]).any()
    assert torch.isnan(out[9]) and out[8] == 0


def test_empty_rois_give_empty_output_with_working_backward():
    features = torch.randn(1, 3, 5, 5, requires_grad=True)
    for rois in (torch.zeros(0, 5), torch.zeros(0, 5, dtype=torch.long)):
        out = roi_spp(features, rois, (2, 1))
        assert out.shape == (0, 15)
        out.sum().backward()
        assert torch.equal(features.grad, torch.zeros_like(features))


def test_torchvision_path_equals_cpu_kernel():
    # The path other devices take, exercised on CPU inputs.
    g = torch.Generator().manual_seed(8)
    features = torch.randn(2, 3, 14, 9, generator=g)
    rois = random_rois(30, 2, 14, 9, g, inside=False)
    cells = _clip_rois(rois, features)
    assert torch.equal(_torchvision_spp(features, cells, (6, 3, 2, 1)), roi_spp(features, rois, (6, 3, 2, 1)))
    bf16 = features.bfloat16()
    assert torch.equal(_torchvision_spp(bf16, cells, (3,)), roi_spp(bf16, rois, (3,)))


@pytest.mark.parametrize(
    "features, rois, levels, error, match",
    [
        (torch.zeros(3, 4, 4), torch.zeros(1, 5), (1,), ValueError, "N, C, H, W"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 4), (1,), ValueError, r"\(K, 5\)"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(5), (1,), ValueError, r"\(K, 5\)"),
        (torch.zeros(1, 1, 4, 4), torch.tensor([[1, 0, 0, 1, 1]]), (1,), ValueError, "batch index 1"),
        (torch.zeros(1, 1, 4, 4), torch.tensor([[-1, 0, 0, 1, 1]]), (1,), ValueError, "batch index -1"),
        (torch.zeros(1, 1, 4, 4), torch.tensor([[0, 0, float("nan"), 1, 1]]), (1,), ValueError, "NaN or inf"),
        (torch.zeros(1, 1, 4, 4), torch.tensor([[0, 0, 0, float("inf"), 1]]), (1,), ValueError, "NaN or inf"),
        (torch.zeros(1, 1, 4, 4), torch.tensor([[0.5, 0, 0, 1, 1]]), (1,), ValueError, "whole numbers"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (), ValueError, "must not be empty"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (2, 0), ValueError, "positive int"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (2.0,), ValueError, "positive int"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (True,), ValueError, "positive int"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 3, ValueError, "sequence"),
        (torch.zeros(1, 1, 0, 4), torch.zeros(1, 5), (1,), ValueError, "H, W >= 1"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 5), (1,), TypeError, "floating point"),
        ([[1.0]], torch.zeros(1, 5), (1,), TypeError, "Tensor"),
    ],
)
def test_bad_input_raises_clear_errors(features, rois, levels, error, match):
    with pytest.raises(error, match=match):
        roi_spp(features, rois, levels)


@pytest.mark.parametrize("parallel", [True, False])
def test_serial_and_parallel_kernels_agree_with_torchvision(monkeypatch, parallel):
    module = importlib.import_module("sppnet.ops.roi_spp")

    monkeypatch.setattr(module, "_PARALLEL_MIN_OUTPUTS", 0 if parallel else 2**62)
    monkeypatch.setattr(module, "_BACKWARD_PARALLEL_MIN_OUTPUTS", 0 if parallel else 2**62)
    # The multi-threaded builds run only where the kernels get more than one thread.
    monkeypatch.setattr(module, "kernel_threads", lambda: 2 if parallel else 1)
    for build in ("spp_forward", "spp_backward"):
        unwanted = f"{build}_{'serial' if parallel else 'parallel'}"
        monkeypatch.setattr(module._spp_cpu, unwanted, _must_not_run(unwanted))
    g = torch.Generator().manual_seed(9)
    features = torch.randn(2, 16, 21, 17, generator=g)
    rois = random_rois(300, 2, 21, 17, g)
    levels = (6, 3, 2, 1)
    seed = torch.randint(-3, 4, (300, spp_output_size(16, levels)), generator=g).float()
    grads = []
    for pool in (roi_spp, torchvision_pyramid):
        x = features.clone().requires_grad_()
        out = pool(x, rois, levels)
        out.backward(seed)
        grads.append((out.detach(), x.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def _must_not_run(name):
    def kernel(*args):
        raise AssertionError(f"{name} ran")
    return kernel


def test_one_thread_runs_the_serial_builds_with_the_same_results(monkeypatch):
    # A one-thread process (a test worker) never compiles the multi-threaded
    # builds; the serial ones sum the same tasks in the same order.
    module = importlib.import_module("sppnet.ops.roi_spp")
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 64, 40, 50, generator=generator)
    rois = random_rois(3000, 2, 40, 50, generator)
    weights = torch.randn(3000, spp_output_size(64, (6, 3, 2, 1)), generator=generator)

    def run():
        x = features.clone().requires_grad_(True)
        out = roi_spp(x, rois, (6, 3, 2, 1))
        (out * weights).sum().backward()
        return out.detach(), x.grad

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parallel = run()
        torch.set_num_threads(1)
        with monkeypatch.context() as patch:
            for name in ("spp_forward_parallel", "spp_backward_parallel"):
                patch.setattr(module._spp_cpu, name, _must_not_run(name))
            serial = run()
    finally:
        torch.set_num_threads(before)
    assert torch.equal(parallel[0], serial[0]) and torch.equal(parallel[1], serial[1])


def test_results_do_not_depend_on_the_thread_count():
    # Enough outputs for the parallel kernels (>= 2**20); the backward once
    # grouped RoI gradients by thread, so 1 and 2 threads summed differently.
    import numba

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 64, 40, 50, generator=generator)
    n = 3000
    xs = torch.randint(0, 50, (n, 2), generator=generator).sort(1).values
    ys = torch.randint(0, 40, (n, 2), generator=generator).sort(1).values
    rois = torch.stack([torch.randint(0, 2, (n,), generator=generator), xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1)
    weights = torch.randn(n, 64 * 50, generator=generator)
    results = []
    before, torch_before = numba.get_num_threads(), torch.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            torch.set_num_threads(threads)
            x = features.clone().requires_grad_(True)
            out = roi_spp(x, rois, (6, 3, 2, 1))
            (out * weights).sum().backward()
            results.append((out.detach(), x.grad))
    finally:
        numba.set_num_threads(before)
        torch.set_num_threads(torch_before)
    assert all(torch.equal(a, b) for a, b in zip(results[0], results[-1]))
