"""sppnet.ops.lrn: values and gradients against torch's LocalResponseNorm,
bfloat16 rounding, memory formats, thread-count independence, fallbacks."""

import numba
import pytest
import torch
from torch import nn

from sppnet.models.backbones.base import lrn
from sppnet.ops import lrn as lrn_module
from sppnet.ops.lrn import LocalResponseNorm, local_response_norm

CL = torch.channels_last
SHAPES = [(2, 7, 5, 3), (1, 1, 4, 4), (2, 3, 1, 1), (1, 96, 9, 11), (3, 4, 6, 1), (1, 17, 1, 13)]
# (size, alpha, beta, k): the paper's, odd and even sizes, the special and general powers, size 1.
HYPER = [(5, 1e-4, 0.75, 1.0), (3, 1e-2, 0.75, 2.0), (4, 0.5, 0.6, 1.0), (2, 1e-3, 0.5, 1.0), (1, 1.0, 1.0, 1.0),
         (6, 0.1, 0.75, 0.5), (7, 0.3, 1.3, 0.8)]


def _input(shape, seed, scale=3.0, dtype=torch.float32):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale).to(dtype)


def _reference(x, size, alpha, beta, k):
    """torch's LRN computed in float64."""
    return nn.LocalResponseNorm(size, alpha, beta, k)(x.double())


@pytest.fixture
def parallel_kernels(monkeypatch):
    """Run the multi-threaded kernels also on small test inputs."""
    monkeypatch.setattr(lrn_module, "_PARALLEL_MIN_VALUES", 0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("hyper", HYPER)
def test_float32_matches_torch(shape, hyper):
    x = _input(shape, sum(shape) + hyper[0])
    ref = _reference(x, *hyper)
    layer = LocalResponseNorm(*hyper)
    outs = []
    for fmt in (torch.contiguous_format, CL):
        out = layer(x.contiguous(memory_format=fmt))
        assert out.dtype == torch.float32 and out.shape == x.shape
        torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=1e-7)
        outs.append(out)
    # Both layouts do the same arithmetic in the same order.
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_output_keeps_memory_format_and_strided_input_works(fmt):
    x = _input((2, 12, 6, 5), 0).contiguous(memory_format=fmt)
    out = LocalResponseNorm(5, 1e-2)(x)
    assert out.stride() == x.stride()
    batch = _input((3, 12, 6, 5), 2).contiguous(memory_format=fmt)
    for part in (batch[1:2], batch[:, :, 2:3], batch[:, 1:]):  # size-1 dims with any stride; not dense
        out = LocalResponseNorm(5, 1e-2)(part)
        assert out.stride() == torch.empty_like(part).stride() == nn.LocalResponseNorm(5, 1e-2)(part).stride()
        torch.testing.assert_close(out.double(), _reference(part, 5, 1e-2, 0.75, 1.0), rtol=2e-6, atol=1e-7)
    strided = _input((2, 12, 6, 10), 1)[..., ::2]  # neither layout: read through an NCHW copy
    torch.testing.assert_close(LocalResponseNorm(5, 1e-2)(strided).double(), _reference(strided, 5, 1e-2, 0.75, 1.0),
                               rtol=2e-6, atol=1e-7)


def test_parallel_kernels_match_serial_and_do_not_depend_on_thread_count(monkeypatch):
    x = _input((2, 40, 17, 19), 3)
    g = _input(x.shape, 4)
    layer = LocalResponseNorm(5, 1e-2, 0.75, 1.0)

    def run(fmt):
        xg = x.clone(memory_format=fmt).requires_grad_()
        out = layer(xg)
        out.backward(g)
        return out.detach(), xg.grad

    results = []
    for fmt in (torch.contiguous_format, CL):
        serial = run(fmt)
        monkeypatch.setattr(lrn_module, "_PARALLEL_MIN_VALUES", 0)
        before = numba.get_num_threads()
        try:
            for threads in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
                if threads > numba.config.NUMBA_NUM_THREADS:
                    continue
                numba.set_num_threads(threads)
                torch_threads = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    results.append(run(fmt))
                finally:
                    torch.set_num_threads(torch_threads)
        finally:
            numba.set_num_threads(before)
            monkeypatch.setattr(lrn_module, "_PARALLEL_MIN_VALUES", 2**16)
        results.append(serial)
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(grad, results[0][1])


def test_one_thread_runs_the_serial_builds(monkeypatch):
    # A one-thread process (a test worker) never compiles the multi-threaded builds.
    def must_not_run(*args):
        raise AssertionError("a multi-threaded build ran on one thread")

    for (name, parallel) in list(lrn_module._KERNELS):
        if parallel:
            monkeypatch.setitem(lrn_module._KERNELS, (name, parallel), must_not_run)
    x = _input((2, 40, 40, 50), 5)  # above _PARALLEL_MIN_VALUES
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for fmt in (torch.contiguous_format, CL):
            xg = x.clone(memory_format=fmt).requires_grad_()
            LocalResponseNorm(5, 1e-2, 0.75, 1.0)(xg).sum().backward()
    finally:
        torch.set_num_threads(before)


def _bf16_ulp(values: torch.Tensor) -> torch.Tensor:
    """One bfloat16 unit in the last place at each value (8 significant bits)."""
    exponent = torch.frexp(values.float().abs().clamp_min(torch.finfo(torch.bfloat16).tiny)).exponent
    return torch.ldexp(torch.ones_like(values, dtype=torch.float32), exponent - 8)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
@pytest.mark.parametrize("hyper", [HYPER[0], HYPER[2], (3, 1.0, 0.75, 1.0)])
def test_bfloat16_is_float32_rounded_once(fmt, hyper):
    x = _input((2, 24, 7, 9), 5, dtype=torch.bfloat16).contiguous(memory_format=fmt)
    out = LocalResponseNorm(*hyper)(x)
    assert out.dtype == torch.bfloat16 and out.stride() == x.stride()
    ref = _reference(x.float(), *hyper).float()  # exact (float64) result of the bf16 inputs
    # Our float32 result is within a few float32 ulps of it, so rounding it once
    # lands on one of the two bfloat16 neighbours of the exact value.
    assert ((out.float() - ref).abs() <= _bf16_ulp(ref)).all()
    assert (out == ref.bfloat16()).float().mean() > 0.99


def test_bfloat16_rounds_to_nearest_even_and_keeps_nan():
    # With alpha 0 and beta -1, b = a * k exactly in float32 (a has 8 significant
    # bits, a * 3 at most 10): the kernel's output is that product rounded to
    # bfloat16, ties included, which must be torch's round-to-nearest-even.
    every = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    small = every[every.float().abs() < 2.0**60]  # a ** 2 stays finite (0 * inf would be NaN, as in torch)
    near_one = every[(every.float().abs() >= 1) & (every.float().abs() < 2)]
    # k = 3 everywhere (subnormals, ties, -0.0); k = 1.5 * 2**127 takes products
    # past bfloat16's largest value: they round to it or overflow to +-inf.
    for values, k in ((small, 3.0), (near_one, 1.5 * 2.0**127)):
        x = values.reshape(1, 1, 1, -1)
        out = LocalResponseNorm(1, 0.0, -1.0, k)(x)
        expected = (x.float() * k).bfloat16()
        assert torch.equal(out.view(torch.int16), expected.view(torch.int16))
    assert torch.isinf(expected).any()
    # NaN in, NaN out, in the windows it reaches (as torch's).
    y = _input((1, 8, 2, 2), 6, dtype=torch.bfloat16)
    y[0, 3, 1, 0] = float("nan")
    out = LocalResponseNorm(3, 1e-2)(y)
    ref = nn.LocalResponseNorm(3, 1e-2)(y.float())
    assert torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.isnan(out).sum() == 3


@pytest.mark.parametrize("hyper", [HYPER[0], HYPER[1], HYPER[2], HYPER[3], HYPER[4]])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_float64_kernel_passes_gradcheck(hyper, fmt):
    size, alpha, beta, k = hyper
    x = _input((2, 6, 3, 2), 7, scale=1.5, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, alpha, beta, k), (x,))


@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_float32_backward_matches_torch_in_float64(hyper, fmt):
    x = _input((2, 13, 5, 4), 8).contiguous(memory_format=fmt)
    g = _input(x.shape, 9)
    ours = x.clone().requires_grad_()
    LocalResponseNorm(*hyper)(ours).backward(g.contiguous(memory_format=CL))  # any grad layout is accepted
    ref = x.double().requires_grad_()
    _reference(ref, *hyper).backward(g.double())
    assert ours.grad.dtype == torch.float32 and ours.grad.stride() == x.stride()
    torch.testing.assert_close(ours.grad.double(), ref.grad, rtol=1e-5, atol=1e-5 * ref.grad.abs().max().item())


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_bfloat16_backward_is_close_to_float64(fmt):
    x = _input((2, 16, 5, 6), 10, dtype=torch.bfloat16).contiguous(memory_format=fmt).requires_grad_()
    g = _input(x.shape, 11, dtype=torch.bfloat16)
    LocalResponseNorm(5, 0.1)(x).backward(g)
    ref = x.detach().double().requires_grad_()
    _reference(ref, 5, 0.1, 0.75, 1.0).backward(g.double())
    assert x.grad.dtype == torch.bfloat16 and x.grad.stride() == x.stride()
    torch.testing.assert_close(x.grad.double(), ref.grad, rtol=2**-7, atol=2**-7 * ref.grad.abs().max().item())


def test_module_is_torchs_layer_and_lrn_builds_it():
    layer = lrn()
    assert isinstance(layer, LocalResponseNorm) and isinstance(layer, nn.LocalResponseNorm)
    assert (layer.size, layer.alpha, layer.beta, layer.k) == (5, 1e-4, 0.75, 1.0)
    assert repr(layer) == repr(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0))
    assert layer.state_dict() == nn.LocalResponseNorm(5).state_dict() == {}


def test_falls_back_to_torch_where_the_kernels_do_not_apply():
    layer, theirs = LocalResponseNorm(3, 1e-2), nn.LocalResponseNorm(3, 1e-2)
    for x in (_input((2, 5, 3, 4), 12, dtype=torch.float64), _input((2, 5, 7), 12), _input((1, 5, 2, 3, 4), 12),
              torch.empty(0, 5, 3, 3)):
        assert torch.equal(layer(x), theirs(x))  # torch's own code path: identical bits
    assert layer(torch.randn(1, 4, 2, 2, device="meta")).device.type == "meta"


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_traced_and_scripted_graphs_hold_torchs_ops():
    layer = LocalResponseNorm(5, 1e-2)
    x = _input((1, 8, 5, 6), 13)
    traced = torch.jit.trace(layer, (x,))
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert "prim::PythonOp" not in kinds and "aten::avg_pool3d" in kinds
    scripted = torch.jit.script(layer)
    y = _input((2, 8, 3, 4), 14)
    for module in (traced, scripted):
        torch.testing.assert_close(module(y), layer(y), rtol=2e-6, atol=1e-7)


def test_autocast_bf16_feeds_bfloat16_and_inplace_relu_before_is_fine():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 3).to(memory_format=CL)
    x = torch.randn(1, 3, 12, 10).contiguous(memory_format=CL)

    def net(norm, image):
        return norm(nn.functional.relu(conv(image), inplace=True))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = net(LocalResponseNorm(5, 1e-2), x)
        theirs = net(nn.LocalResponseNorm(5, 1e-2), x)  # torch's runs its pooling, and returns, in float32
    assert ours.dtype == torch.bfloat16 and ours.is_contiguous(memory_format=CL)
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(ours.float(), theirs, rtol=2**-7, atol=2**-7)
    # Gradients through the in-place ReLU and the LRN (float32) equal torch's.
    grads = []
    for norm in (LocalResponseNorm(5, 1e-2), nn.LocalResponseNorm(5, 1e-2)):
        conv.zero_grad()
        net(norm, x).square().sum().backward()
        grads.append(conv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)


def test_saved_input_modified_in_place_is_caught():
    x = _input((1, 6, 3, 3), 15).requires_grad_()
    y = x * 1
    out = LocalResponseNorm(3)(y)
    y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
