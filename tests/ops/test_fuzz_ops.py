"""Fuzzing the ops with hypothesis: whatever comes in (NaN, inf, huge or
negative numbers, empty or wrongly shaped tensors, odd dtypes, non-tensors),
an op either returns a well-formed result or raises one of its documented
errors (``TypeError``/``ValueError`` naming the value). Any other exception
type (``RuntimeError`` from deep inside torch, ``IndexError``,
``ZeroDivisionError``, ``OverflowError``, ...) fails the test.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sppnet.ops.boxes import BoxCoder, check_boxes, class_nms, clip_boxes
from sppnet.ops.geometry import FeatureGeometry, boxes_to_cells
from sppnet.ops.roi_spp import roi_spp
from sppnet.ops.spp import SpatialPyramidPooling, spatial_pyramid_pool

DOCUMENTED = (TypeError, ValueError)
# A silent cast that drops data (complex -> real) is a bug too.
pytestmark = pytest.mark.filterwarnings("error:Casting complex values to real")
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e30, -1e30, 1e-30, 65504.0, 3.4e38]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
OTHER_DTYPES = [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64]


def mostly(valid, invalid, weight: int = 4):
    """``valid`` about ``weight`` times as often as ``invalid``."""
    return st.sampled_from([True] * weight + [False]).flatmap(lambda ok: valid if ok else invalid)


def values(allow_special: bool = True):
    plain = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
    return st.one_of(plain, st.sampled_from(SPECIAL)) if allow_special else plain


@st.composite
def tensors(draw, shape=None, dtypes=FLOAT_DTYPES + OTHER_DTYPES, max_dims: int = 3, max_side: int = 6):
    """A tensor of the given (or a random) shape and dtype, with special values."""
    if shape is None:
        shape = draw(st.lists(st.integers(0, max_side), min_size=0, max_size=max_dims))
    numel = math.prod(shape)
    data = draw(st.lists(values(), min_size=numel, max_size=numel))
    dtype = draw(st.sampled_from(dtypes))
    x = torch.tensor(data, dtype=torch.float64).reshape(shape)
    if dtype.is_complex:
        return x.nan_to_num().to(dtype)
    if not dtype.is_floating_point:
        # torch's float -> int casts of NaN/inf/huge are undefined, not errors: keep them in range
        info = torch.iinfo(dtype) if dtype != torch.bool else None
        x = x.nan_to_num(0.0, 0.0, 0.0)
        x = x.clamp(info.min, info.max) if info else x != 0
    return x.to(dtype)


@st.composite
def boxes_like(draw, rows=None, cols=4, valid_fraction=0.8):
    """Mostly (N, cols) float boxes, often valid (x1 <= x2), sometimes anything at all."""
    if draw(st.floats(0, 1)) >= valid_fraction:
        return draw(st.one_of(tensors(), st.none(), st.just([[0, 0, 1, 1]]), st.integers(), st.text(max_size=3)))
    n = draw(st.integers(0, 6)) if rows is None else rows
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    xy = torch.tensor(draw(st.lists(values(allow_special=draw(st.booleans())), min_size=2 * n, max_size=2 * n)),
                      dtype=torch.float64).reshape(n, 2)
    wh = torch.tensor(draw(st.lists(st.floats(0, 1e3), min_size=2 * n, max_size=2 * n)), dtype=torch.float64)
    out = torch.cat([xy, xy + wh.reshape(n, 2)], dim=1)
    if cols != 4:
        out = out.repeat(1, max(cols // 4, 1))[:, :cols]
    return out.to(dtype)


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x).all(dim=-1)


# ----------------------------------------------------------------------------- boxes


@FUZZ
@given(boxes=boxes_like())
def test_check_boxes(boxes):
    try:
        out = check_boxes(boxes)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        return
    assert out is boxes and out.dim() == 2 and out.shape[1] == 4 and out.is_floating_point()
    assert bool(torch.isfinite(out).all()) and bool((out[:, 2:] >= out[:, :2]).all())


image_sizes = mostly(
    st.one_of(st.tuples(st.integers(1, 1000), st.integers(1, 1000)), st.just(torch.tensor([20, 30])),
              st.tuples(st.sampled_from([5.0, 480.0, 1e30, 1e-30, 65504.0, 3.4e38]), st.sampled_from([7.0, 640.0]))),
    st.one_of(st.tuples(st.sampled_from(SPECIAL), st.sampled_from(SPECIAL)), st.lists(st.integers(1, 50), max_size=3),
              st.tuples(st.integers(-5, 0), st.integers(-5, 10)), st.none(), st.text(max_size=3), st.integers()),
)


@FUZZ
@given(boxes=mostly(st.one_of(boxes_like(), boxes_like(cols=8)), tensors()), size=image_sizes)
def test_clip_boxes(boxes, size):
    try:
        out = clip_boxes(boxes, size)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        return
    assert out.shape == boxes.shape and out.dtype == boxes.dtype
    # the bounds as the dtype holds them (bfloat16 rounds 547 to 548)
    height, width = (float(torch.tensor(float(v), dtype=torch.float64).to(boxes.dtype)) for v in size)
    x, y = out[..., 0::2].double(), out[..., 1::2].double()
    # NaN stays NaN; everything else lands inside the image
    assert bool(((x >= 0) & (x <= width) | x.isnan()).all()) and bool(((y >= 0) & (y <= height) | y.isnan()).all())


coders = st.builds(
    BoxCoder,
    means=mostly(st.tuples(*[st.sampled_from([0.0, 0.1, -1.0, 1e30])] * 4), st.lists(st.sampled_from(SPECIAL), max_size=5)),
    stds=mostly(st.tuples(*[st.sampled_from([0.1, 0.2, 1.0, 1e-30, 1e30])] * 4),
                st.lists(st.sampled_from(SPECIAL), max_size=5)),
    clip_log_scale=st.sampled_from([math.log(1000 / 16), math.inf, -math.inf, 0.0, 1e30, -1e300, math.nan]),
)


@FUZZ
@given(data=st.data())
def test_box_coder(data):
    try:
        coder = data.draw(coders)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        return
    n = data.draw(st.integers(0, 5))
    proposals = data.draw(mostly(boxes_like(rows=n), tensors()))
    targets = data.draw(mostly(boxes_like(rows=n), tensors()))
    try:
        deltas = coder.encode(proposals, targets)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        pass
    else:
        assert deltas.shape == (n, 4)
    k = data.draw(st.integers(1, 3))
    deltas = data.draw(mostly(st.one_of(tensors(shape=(n, 4 * k), dtypes=FLOAT_DTYPES), boxes_like(rows=n, cols=4 * k)),
                              tensors()))
    try:
        decoded = coder.decode(deltas, proposals)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        return
    assert decoded.shape == deltas.shape and decoded.dtype == deltas.dtype


@FUZZ
@given(data=st.data())
def test_class_nms(data):
    r, k = data.draw(st.integers(0, 6)), data.draw(st.integers(0, 3))
    shared = data.draw(st.booleans())
    boxes = data.draw(mostly(boxes_like(rows=r * (1 if shared else k)), tensors()))
    if isinstance(boxes, torch.Tensor) and not shared and boxes.dim() == 2 and boxes.shape == (r * k, 4):
        boxes = boxes.reshape(r, k, 4)
    scores = data.draw(mostly(tensors(shape=(r, k), dtypes=FLOAT_DTYPES), tensors()))
    iou = data.draw(st.sampled_from([0.3, 0.5, 0.0, 1.0, -1.0, 2.0, math.nan]))
    top_k = data.draw(st.sampled_from([1, 3, 100, 0, -1]))
    try:
        window, labels, kept, kept_scores = class_nms(boxes, scores, iou, top_k)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        return
    d = window.shape[0]
    assert labels.shape == (d,) and kept.shape == (d, 4) and kept_scores.shape == (d,)
    r, k = scores.shape  # what the op accepted: ``mostly`` may have drawn other shapes than (r, k) that fit
    if d:
        assert int(window.min()) >= 0 and int(window.max()) < r
        assert int(labels.min()) >= 1 and int(labels.max()) <= k
        for c in range(1, k + 1):
            assert int((labels == c).sum()) <= max(top_k, 0)


# ----------------------------------------------------------------------------- geometry


geometries = st.builds(FeatureGeometry, stride=st.integers(1, 32), offset=st.floats(-50, 50), receptive_field=st.integers(1, 200))
feature_sizes = mostly(
    st.one_of(st.none(), st.tuples(st.integers(1, 40), st.integers(1, 40)), st.just(torch.tensor([4, 5]))),
    st.one_of(st.tuples(st.integers(-2, 0), st.integers(-2, 40)), st.just((math.inf, 3)), st.just((math.nan, 3)),
              st.just((2.5, 3)), st.lists(st.integers(1, 9), max_size=3), st.text(max_size=2)),
)


@FUZZ
@given(boxes=mostly(boxes_like(), tensors()), geometry=geometries,
       rule=mostly(st.sampled_from(["sppnet", "fast-rcnn"]), st.sampled_from(["SPPNET", "", None])), size=feature_sizes)
def test_boxes_to_cells(boxes, geometry, rule, size):
    try:
        cells = boxes_to_cells(boxes, geometry, rule, size)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        return
    assert cells.dtype == torch.int64 and cells.shape == (boxes.shape[0], 4)
    if size is not None and cells.numel():
        height, width = (int(v) for v in size)
        assert bool((cells[:, 0::2] >= 0).all()) and bool((cells[:, 0::2] < width).all())
        assert bool((cells[:, 1::2] >= 0).all()) and bool((cells[:, 1::2] < height).all())
    finite = _finite_rows(boxes.double()) & (boxes.double().abs() < 1e15).all(dim=1)
    assert bool((cells[finite, 2:] >= cells[finite, :2]).all())


def test_feature_geometry_rejects_bad_values():
    for stride in (0, -1):
        try:
            FeatureGeometry(stride=stride, offset=0.0, receptive_field=1)
        except DOCUMENTED:
            continue
        raise AssertionError(f"stride {stride} accepted")


# ----------------------------------------------------------------------------- pooling


levels_strategy = mostly(
    st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
    st.sampled_from([(), (0,), (-1,), (1.5,), (True,), "6", 6, None, [2, 0], (torch.tensor(2),)]),
)


@st.composite
def feature_maps(draw):
    n, c, h, w = draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 7)), draw(st.integers(0, 7))
    shape = draw(mostly(st.just([n, c, h, w]), st.lists(st.integers(0, 4), max_size=5)))
    x = draw(tensors(shape=shape, dtypes=draw(mostly(st.just(FLOAT_DTYPES), st.just(OTHER_DTYPES)))))
    if draw(st.booleans()) and x.dim() == 4:
        x = x.transpose(2, 3)  # not contiguous
    return x


@st.composite
def rois_for(draw, features):
    k = draw(st.integers(0, 6))
    n, h, w = (features.shape[0], features.shape[-2], features.shape[-1]) if features.dim() >= 2 else (1, 1, 1)
    if draw(st.integers(0, 4)) > 0:  # mostly sensible rows, some out of the map, inverted, negative
        batch = draw(st.lists(st.integers(-1, max(n, 1)), min_size=k, max_size=k))
        coords = draw(st.lists(st.integers(-3, max(h, w) + 3), min_size=4 * k, max_size=4 * k))
        rows = torch.tensor([[b, *coords[4 * i: 4 * i + 4]] for i, b in enumerate(batch)], dtype=torch.float64)
        rows = rows.reshape(k, 5)
        return rows.to(draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.int32])))
    return draw(st.one_of(tensors(shape=(k, 5)), tensors(), st.none(), st.just([[0, 0, 0, 1, 1]])))


@FUZZ
@given(data=st.data())
def test_roi_spp(data):
    features = data.draw(feature_maps())
    rois = data.draw(rois_for(features))
    levels = data.draw(levels_strategy)
    grad = features.is_floating_point() and data.draw(st.booleans())
    if grad:
        features.requires_grad_()
    try:
        out = roi_spp(features, rois, levels)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        return
    bins = sum(n * n for n in levels)
    assert out.shape == (rois.shape[0], features.shape[1] * bins) and out.dtype == features.dtype
    if grad and out.numel():
        out.float().sum().backward()
        assert features.grad.shape == features.shape


@FUZZ
@given(data=st.data())
def test_spatial_pyramid_pool(data):
    x = data.draw(feature_maps())
    levels = data.draw(levels_strategy)
    n = x.shape[0] if x.dim() else 0
    sizes = data.draw(st.one_of(
        st.none(), st.none(), tensors(shape=(n, 2)), tensors(),
        st.lists(st.integers(-1, 8), min_size=2 * n, max_size=2 * n).map(lambda v: torch.tensor(v).reshape(n, 2)),
    ))
    mode = data.draw(st.sampled_from(["max", "avg"]))
    try:
        if mode == "max" and data.draw(st.booleans()):
            out = spatial_pyramid_pool(x, levels, sizes)
        else:
            out = SpatialPyramidPooling(levels, mode)(x, sizes)
    except DOCUMENTED as error:
        event(f"raised {type(error).__name__}")
        return
    assert out.shape == (x.shape[0], x.shape[1] * sum(k * k for k in levels))
