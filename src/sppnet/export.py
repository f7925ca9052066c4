"""Export trained models to ONNX or TorchScript, checked against PyTorch.

Shapes and names: N images, 3 x H x W normalised network input (ImageNet mean
and std, already resized), K classes of a classifier; a detector has K object
classes plus background (``num_classes`` = K + 1), R boxes of one image.

Graphs (input and output names as in the files):

- SPP classifier: ``image`` float32 (N, 3, H, W) -> ``logits`` (N, K);
  N, H and W are dynamic.
- Fast R-CNN scoring: ``image`` (1, 3, H, W) and ``boxes`` (R, 4) xyxy in that
  image's pixels -> ``scores`` (R, K + 1) class probabilities and
  ``pred_boxes`` (R, K + 1, 4) regressed per class, clipped to the image: the
  model's own ``FastRCNN.score_resized`` (``score`` at one scale), traced;
  NMS (``class_nms``) stays in Python. An ONNX value cannot be both an input
  and an output, hence ``pred_boxes``.
- SPP-net scoring at one scale: the same inputs -> ``scores`` (R, K) (SVM or
  softmax, the run's ``test.scorer``) and ``pred_boxes`` (R, K, 4) from each
  class's box regressor: the model's own ``SPPNet.score_resized``, traced.
  R-CNN warps every window through the whole network and has no shared-map
  scoring graph: it is refused.

How: the ops take their traced paths while ``torch.jit.trace`` or
``torch.onnx.export`` records (``sppnet.ops.tracing``): sizes stay tensors and
pooling runs through torchvision's ``roi_pool``, which exports as ONNX
``MaxRoiPool``. Its bins are SPEC section 1's for every map size, including
maps smaller than the finest pyramid level, so the exported classifier never
meets ONNX's "adaptive pooling needs divisible sizes" failure. ONNX files are
written by the TorchScript-based exporter (``dynamo=False``), for which
torchvision registers ``MaxRoiPool``. A TorchScript file loads with
``torch.jit.load`` once ``torchvision`` is imported (its ``roi_pool`` op).

Every export is checked: ``check_onnx`` (ONNX Runtime) and
``check_torchscript`` run the file on inputs of several sizes and return the
largest absolute difference from the eager PyTorch model. ``onnx`` and
``onnxruntime`` are imported only there (``pip install sppnet[export]``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "FORMATS",
    "OPSET",
    "FastRCNNScoring",
    "SPPNetScoring",
    "scoring_module",
    "export_classifier",
    "export_detector",
    "export_module",
    "check_onnx",
    "check_torchscript",
    "check_export",
    "classifier_check_inputs",
    "detector_check_inputs",
    "export_run",
]

FORMATS = ("onnx", "torchscript")
# MaxRoiPool is opset 1; 17 is the newest opset whose every op here onnxruntime
# has run for years (LayerNorm-era ops are not needed).
OPSET = 17


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    return format


class FastRCNNScoring(nn.Module):
    """The graph of a Fast R-CNN model's own one-scale scoring
    (``FastRCNN.score_resized``): ``(image (1, 3, H, W), boxes (R, 4))`` in
    that already resized and normalised image's pixels -> ``(scores (R,
    K+1), pred_boxes (R, K+1, 4))``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.score_resized(image, boxes)


class SPPNetScoring(nn.Module):
    """The graph of an SPP-net model's own one-scale testing
    (``SPPNet.score_resized``): ``(image (1, 3, H, W), boxes (R, 4))`` in
    that already resized and normalised image's pixels -> ``(scores (R, K)
    of the model's scorer, pred_boxes (R, K, 4))``: SVM decision values or
    softmax probabilities, every window regressed by every class's
    regressor (on pool5, as ``BoxRegressors``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if model.svms is None or model.regressors is None:
            raise ValueError("this SPP-net detector has no SVMs or box regressors yet: finish its training first")
        classes = model.regressors.weights.shape[0] - 1
        if classes != model.svms.num_classes:
            raise ValueError(f"the box regressors have {classes} classes but the SVMs {model.svms.num_classes}")
        self.model = model

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.score_resized(image, boxes)


def scoring_module(detector) -> nn.Module:
    """The exportable scoring graph of a detector: a ``FastRCNN`` model, a
    loaded Fast R-CNN or SPP-net detector (``load_detector``), or a scoring
    module itself."""
    from sppnet.engine.fast_rcnn import FastRCNNDetector
    from sppnet.engine.sppnet_detection import SPPNetDetector
    from sppnet.models.detection.fast_rcnn import FastRCNN
    from sppnet.models.detection.sppnet import SPPNet

    if isinstance(detector, (FastRCNNScoring, SPPNetScoring)):
        return detector
    if isinstance(detector, FastRCNNDetector):
        detector = detector.model
    if isinstance(detector, FastRCNN):
        return FastRCNNScoring(detector)
    if isinstance(detector, SPPNetDetector):
        detector = detector.model
    if isinstance(detector, SPPNet):
        return SPPNetScoring(detector)
    raise ValueError(f"cannot export a {type(detector).__name__}: export supports SPP classifiers, Fast R-CNN and "
                     "SPP-net (one scale) detectors; R-CNN warps each window through the whole network and has no "
                     "shared-feature-map scoring graph")


def _ignore_deprecations() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)


def export_module(module: nn.Module, path: str | Path, format: str, example_inputs: tuple[torch.Tensor, ...],
                  input_names: Sequence[str], output_names: Sequence[str],
                  dynamic_axes: Mapping[str, Mapping[int, str]]) -> Path:
    """Trace ``module`` (in eval mode) on ``example_inputs`` and write it as
    ONNX (with ``dynamic_axes``) or TorchScript to ``path``."""
    _check_format(format)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks in the library read sizes as Python values at trace
        # time, which the tracer reports; the graph itself keeps every size
        # dynamic (shape_of), and the parity checks at several sizes prove it.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # torch.jit and the TorchScript-based ONNX exporter are deprecated in
        # favour of torch.export, but torchvision's MaxRoiPool symbolic serves
        # only the latter, and TorchScript is the format asked for.
        _ignore_deprecations()
        if format == "onnx":
            # The exporter notes the strided slices it leaves to run time: nothing to act on.
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(module, example_inputs, str(path), input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dict(dynamic_axes),
                              opset_version=OPSET, dynamo=False)
        else:
            torch.jit.trace(module, example_inputs, check_trace=False).save(str(path))
    return path


def export_classifier(model: nn.Module, path: str | Path, format: str = "onnx",
                      example_size: tuple[int, int] = (224, 224)) -> Path:
    """Write an ``SPPClassifier`` as ``image (N, 3, H, W) -> logits (N, K)``.

    N, H and W are dynamic for an SPP model; the no-SPP baseline fits only its
    training size (``example_size``), so only N is dynamic there."""
    from sppnet.models.classifier import SPPClassifier

    _check_format(format)
    if not isinstance(model, SPPClassifier):
        raise TypeError(f"export_classifier needs an SPPClassifier, got {type(model).__name__}")
    if model.uses_spp and model.spp.mode != "max":
        raise ValueError(f"only max pooling SPP exports (its bins are MaxRoiPool's); this model pools {model.spp.mode!r}")
    height, width = example_size
    example = torch.zeros(1, 3, height, width)
    axes = {0: "batch", 2: "height", 3: "width"} if model.uses_spp else {0: "batch"}
    return export_module(model, path, format, (example,), ["image"], ["logits"],
                         {"image": axes, "logits": {0: "batch"}})


def export_detector(detector, path: str | Path, format: str = "onnx", example_size: tuple[int, int] = (96, 128)) -> Path:
    """Write a detector's scoring graph (see the module docstring):
    ``image (1, 3, H, W), boxes (R, 4) -> scores, pred_boxes``; H, W, R dynamic."""
    _check_format(format)
    module = scoring_module(detector)
    height, width = example_size
    example = (torch.zeros(1, 3, height, width), torch.tensor([[0.0, 0.0, width / 2, height / 2],
                                                                [width / 4, height / 4, width - 1.0, height - 1.0]]))
    return export_module(module, path, format, example, ["image", "boxes"], ["scores", "pred_boxes"],
                         {"image": {2: "height", 3: "width"}, "boxes": {0: "boxes"}, "scores": {0: "boxes"},
                          "pred_boxes": {0: "boxes"}})


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _as_cases(inputs, reference_outputs) -> list[tuple[dict, list]]:
    """One case (a dict of inputs, outputs) or a list of them -> a list of cases."""
    if isinstance(inputs, Mapping):
        inputs, reference_outputs = [inputs], [reference_outputs]
    if len(inputs) != len(reference_outputs):
        raise ValueError(f"got {len(inputs)} input sets but {len(reference_outputs)} reference output sets")
    cases = []
    for feeds, expected in zip(inputs, reference_outputs):
        if isinstance(expected, (torch.Tensor, np.ndarray)):
            expected = [expected]
        cases.append((dict(feeds), list(expected.values()) if isinstance(expected, Mapping) else list(expected)))
    return cases


def _max_abs_diff(actual: Sequence, expected: Sequence) -> float:
    if len(actual) != len(expected):
        raise ValueError(f"the exported graph gave {len(actual)} outputs, the reference {len(expected)}")
    worst = 0.0
    for got, want in zip(actual, expected):
        got, want = _numpy(got), _numpy(want)
        if got.shape != want.shape:
            raise ValueError(f"exported output of shape {got.shape} where PyTorch gives {want.shape}")
        if got.size:
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))
    return worst


def check_onnx(path: str | Path, inputs, reference_outputs) -> float:
    """Run an ONNX file in ONNX Runtime (CPU) and return the largest absolute
    difference from ``reference_outputs``.

    ``inputs``: a dict (input name -> tensor or array) or a list of such
    dicts; ``reference_outputs``: per input dict, the expected outputs in the
    graph's output order (a sequence, or a dict in that order).
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"checking an ONNX file needs onnx and onnxruntime ({error}): "
                          "pip install 'sppnet[export]'") from error

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for feeds, expected in _as_cases(inputs, reference_outputs):
        outputs = session.run(None, {name: _numpy(value) for name, value in feeds.items()})
        worst = max(worst, _max_abs_diff(outputs, expected))
    return worst


def check_torchscript(path: str | Path, inputs, reference_outputs) -> float:
    """As ``check_onnx`` for a TorchScript file (``torch.jit.load``); inputs
    are passed in the dicts' order."""
    import torchvision  # noqa: F401  (registers the torchvision::roi_pool op the file calls)

    with warnings.catch_warnings():
        _ignore_deprecations()
        module = torch.jit.load(str(path)).eval()
    worst = 0.0
    with torch.no_grad():
        for feeds, expected in _as_cases(inputs, reference_outputs):
            outputs = module(*(torch.as_tensor(value) for value in feeds.values()))
            outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
            worst = max(worst, _max_abs_diff(outputs, expected))
    return worst


def check_export(path: str | Path, format: str, inputs, reference_outputs) -> float:
    """``check_onnx`` or ``check_torchscript`` by ``format``."""
    return (check_onnx if _check_format(format) == "onnx" else check_torchscript)(path, inputs, reference_outputs)


def classifier_check_inputs(crop: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Normalised images around a training crop size, odd sizes and a batch of 2."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(2, crop, crop), (1, crop * 3 // 4 + 1, crop * 5 // 4 + 3), (1, crop * 3 // 2 - 1, crop + 5)]
    return [{"image": torch.randn(n, 3, h, w, generator=generator)} for n, h, w in sizes]


def _random_boxes(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    corners = torch.rand(count, 2, 2, generator=generator) * torch.tensor([width, height])
    low, high = corners.min(1).values, corners.max(1).values
    boxes = torch.cat([low, torch.maximum(high, low + 1)], 1)
    # Also the whole image and a box smaller than one cell.
    return torch.cat([boxes, torch.tensor([[0.0, 0.0, width, height], [3.0, 5.0, 7.0, 8.0]])])


def detector_check_inputs(scale: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Normalised images near a test scale (shorter side) with random boxes."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for (height, width), count in (((scale, round(scale * 4 / 3) + 1), 40), ((scale * 5 // 4 + 3, scale - 3), 7)):
        image = torch.randn(1, 3, height, width, generator=generator)
        cases.append({"image": image, "boxes": _random_boxes(count, height, width, generator)})
    return cases


def _load_run(run: Path):
    """("classify", (model, config, classes)) or (method name, detector)."""
    from sppnet.engine.detectors import method_of_run

    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a run folder: config.yaml is missing")
    try:
        method = method_of_run(run)
    except ValueError:
        method = None
    if method is not None and method.name not in ("fast-rcnn", "sppnet"):
        raise ValueError(f"{run} is a {method.name} run: export supports classification runs, Fast R-CNN and "
                         "SPP-net (one scale) detectors; R-CNN warps each window through the whole network and has "
                         "no shared-feature-map scoring graph")
    if method is not None:
        return method.name, method.loader(run)
    from sppnet.engine.classification import load_classifier

    try:
        return "classify", load_classifier(run)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{run} is neither a classification run nor a detector run: {error}") from None


def export_run(run: str | Path, format: str, out: str | Path, seed: int = 0) -> dict:
    """Export the model of a run folder (classification, Fast R-CNN or
    SPP-net) and check the file against PyTorch on a few input sizes.

    Returns ``{"kind", "format", "path", "inputs" (shapes checked),
    "max_abs_diff", "tolerance", "ok"}``. The tolerance is 1e-4, or 1e-5 of
    the largest reference value where that is more: float32 carries about 7
    digits, so regressed box corners of some 1000 pixels differ by ~1e-4
    between two correct runtimes.
    """
    _check_format(format)
    run = Path(run)
    kind, loaded = _load_run(run)
    with torch.no_grad():
        if kind == "classify":
            model, config, _ = loaded
            crop = config.train.crop
            path = export_classifier(model, out, format, example_size=(crop, crop))
            inputs = classifier_check_inputs(crop, seed) if model.uses_spp else [
                {"image": torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(seed))}]
            references = [[model(case["image"])] for case in inputs]
        else:
            loaded.set_precision("fp32")  # export the exact path; bf16 autocast is an eager-only fast path
            module = scoring_module(loaded).eval()
            scale = loaded.config.scales[0]
            path = export_detector(module, out, format, example_size=(scale, round(scale * 4 / 3)))
            inputs = detector_check_inputs(scale, seed)
            references = [list(module(case["image"], case["boxes"])) for case in inputs]
    diff = check_export(path, format, inputs, references)
    largest = max(float(r.abs().max()) for refs in references for r in refs if r.numel())
    tolerance = max(1e-4, 1e-5 * largest)
    return {"kind": kind, "format": format, "path": str(path),
            "inputs": [{name: list(value.shape) for name, value in case.items()} for case in inputs],
            "max_abs_diff": diff, "tolerance": tolerance, "ok": diff <= tolerance}
