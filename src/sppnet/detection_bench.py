"""``sppnet bench detect``: R-CNN, SPP-net and Fast R-CNN side by side, in one run.

Two parts, each measured on the same machine in the same process:

1. Speed (SPEC section 10's claims). One network for all systems: ZF-5 at
   the paper's width (or ``width``) with SPP levels (6, 3, 2, 1) and fc
   layers of 4096 (its weights do not change the time), the same images and
   the same ``windows`` proposals per image (a dense grid unless told
   otherwise). Seconds per image are split into conv / pooling / fc /
   classifier / NMS for R-CNN (a ``warp`` x ``warp`` window per forward
   pass), SPP-net at 1 scale (688) and at 5 scales (480 ... 1200), Fast R-CNN
   (600, RoI pooling 6 x 6) and Fast R-CNN with truncated SVD of fc6/fc7
   (ranks 1024 and 256), in fp32 and on the bf16 fast path.
2. Quality. With ``train``, each system is trained from its ``tiny`` preset
   on the dataset's train split, all on one pre-trained trunk, and its VOC07
   mAP measured on the test split in fp32 and bf16.

Fairness rules of the speed part (what every system's timed region holds):

- The same images: every system, R-CNN included, is timed on the same
  ``timing_images`` images, with the same windows.
- Each system warms up on its own, in each precision: one untimed pass over
  every timed image just before its timed pass, so kernels chosen and memory
  allocated per input shape (a conv shape per image size, the window
  batches) are not paid for in the timed pass.
- No file decoding: the timed images are decoded once, before any timing
  (the mean seconds per image are reported as ``decode_seconds_per_image``,
  in no total). While timing, the detectors' own ``load_image`` calls are
  served from memory, and SPP-net's convs get the decoded image directly.
  What follows decoding is timed for every system: the conversion to a
  float tensor (in the total), resizing (SPP-net, Fast R-CNN) or warping
  (R-CNN) and normalising (in ``conv``).
- No precision switches: ``set_precision`` and the switch of the conv
  weights to channels-last (bf16) happen before timing; the timed region
  holds inference only.

With the seconds, the work: the FLOPs of every conv and fc layer that ran
(``FlopCounter``, counted in the warm-up pass at the sizes actually used:
R-CNN's whole network per window, the trunk at each scale for the others,
the fc layers per window) give each system's achieved GFLOP/s, reported as
a fraction of the machine's matrix-product peak measured in the same run
(the best of a few ``matmul_size`` cubed ``torch.mm`` calls, per precision).
"""

from __future__ import annotations

import copy
import importlib
import json
import platform
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from sppnet.config import load_config
from sppnet.data.datasets import open_detection_dataset
from sppnet.data.images import ImageError, load_image
from sppnet.proposals import ProposalConfig, compute_proposals
from sppnet.data.records import DetectionDataset, ImageRecord
from sppnet.data.transforms import to_tensor
from sppnet.fast_path import prepare
from sppnet.timing import FlopCounter, StageTimer, matmul_peak_gflops, stage

__all__ = ["DetectBenchConfig", "run_detect_bench", "format_tables", "write_results_section"]

STAGES = ("conv", "pooling", "fc", "classifier", "nms")
SYSTEMS = ("rcnn", "sppnet-1", "sppnet-5", "fast-rcnn", "fast-rcnn-svd")
SECTION_START, SECTION_END = "<!-- sppnet bench detect: start -->", "<!-- sppnet bench detect: end -->"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The engine modules whose detect() decodes the image file with load_image (R-CNN, Fast R-CNN).
DECODING_MODULES = ("sppnet.engine.rcnn", "sppnet.engine.fast_rcnn")


@dataclass(frozen=True)
class DetectBenchConfig:
    split: str = "test"  # the images timed, and the split mAP is measured on
    train_split: str = "train"
    timing_images: int = 3  # images timed, the same ones for every system (R-CNN too)
    windows: int = 2000
    proposals: str = "grid"  # or selective-search-fast (then at most `windows` per image)
    width: float = 1.0  # ZF-5 width of the timing network (1.0 = the paper's)
    hidden: int = 4096  # fc6/fc7 width of the timing network
    sppnet_scale: int = 688
    sppnet_scales: tuple[int, ...] = (480, 576, 688, 864, 1200)
    fast_rcnn_scale: int = 600
    fast_rcnn_max_side: int = 1000
    warp: int = 224
    svd_ranks: tuple[int, int] = (1024, 256)
    precisions: tuple[str, ...] = ("fp32", "bf16")
    train: bool = True
    tiny_svd_ranks: tuple[int, int] = (128, 32)  # tiny presets (fc width 256); see RESULTS.md for the rank sweep
    seed: int = 0
    matmul_size: int = 2048  # side of the torch.mm calls that measure the machine's peak GFLOP/s
    extra_overrides: dict = field(default_factory=dict)  # method -> list of KEY=VALUE for the tiny presets


def _timing_network(config: DetectBenchConfig, num_classes: int):
    from sppnet.models.backbones import build_backbone
    from sppnet.models.classifier import SPPClassifier

    torch.manual_seed(config.seed)
    return SPPClassifier(build_backbone("zf5", config.width), num_classes, (6, 3, 2, 1), config.hidden, 0.5).eval()


def _timing_detectors(config: DetectBenchConfig, classes: tuple[str, ...], work: Path) -> dict:
    """The five systems around one untrained network (weights do not change the time)."""
    from sppnet.engine.detection_stages import TestConfig
    from sppnet.engine.fast_rcnn import FastRCNNConfig, FastRCNNDetector, build_fast_rcnn
    from sppnet.engine.feature_cache import FeatureCache
    from sppnet.engine.rcnn import RCNNConfig, RCNNDetector
    from sppnet.models.detection.rcnn import RCNN, RCNNNetwork
    from sppnet.engine.sppnet_detection import SPPNetConfig, SPPNetDetector
    from sppnet.models.detection.sppnet import SPPNet, SPPNetHead
    from sppnet.models.box_regression import BoxRegressors
    from sppnet.models.svd import compress_fc
    from sppnet.models.svm import LinearSVMs

    num_classes = len(classes)
    classifier = _timing_network(config, num_classes)
    pooled_dim = classifier.fc6[0].in_features
    svms = LinearSVMs(torch.randn(num_classes - 1, config.hidden) * 0.01, torch.zeros(num_classes - 1))
    regressors = BoxRegressors(torch.zeros(num_classes, pooled_dim + 1, 4), 1.0)
    detectors = {}
    rcnn_config = RCNNConfig(warp_size=config.warp)
    rcnn = RCNN(RCNNNetwork(copy.deepcopy(classifier), num_classes).eval(), svms, 1.0, regressors, rcnn_config.warp_size,
                rcnn_config.context, rcnn_config.window_batch, rcnn_config.test.nms, rcnn_config.test.top_k)
    detectors["rcnn"] = RCNNDetector(rcnn, rcnn_config, classes)
    for name, scales in (("sppnet-1", (config.sppnet_scale,)), ("sppnet-5", config.sppnet_scales)):
        net = copy.deepcopy(classifier)
        cache = FeatureCache(work / "unused-cache", net.trunk, scales, max_side=None)
        head = SPPNetHead(net.fc6, net.fc7, num_classes).eval()
        sppnet_config = SPPNetConfig(scales=scales, window_target=224.0)
        model = SPPNet(net.trunk, (6, 3, 2, 1), head, svms, 1.0, regressors, scales, None, 224.0,
                       sppnet_config.test.nms, sppnet_config.test.top_k)
        detectors[name] = SPPNetDetector(model, sppnet_config, classes, cache=cache)
    fast_config = FastRCNNConfig(scales=(config.fast_rcnn_scale,), max_side=config.fast_rcnn_max_side, levels=(6,),
                                 test=TestConfig())
    fast = build_fast_rcnn(copy.deepcopy(classifier), num_classes, fast_config).eval()
    detectors["fast-rcnn"] = FastRCNNDetector(fast, fast_config, classes)
    compressed = copy.deepcopy(fast)
    compress_fc(compressed.head, config.svd_ranks)
    detectors["fast-rcnn-svd"] = FastRCNNDetector(compressed.eval(), fast_config, classes)
    return detectors


class _DecodedImages:
    """The timed images, decoded once before any timing. Within ``serving()``
    the detectors' ``load_image`` (``DECODING_MODULES``) returns them from
    memory; ``served`` counts those calls, so that a detector that decodes
    its image some other way (inside the timed region) is caught."""

    def __init__(self, records: list[ImageRecord]) -> None:
        self.arrays: dict[Path, np.ndarray] = {}
        started = time.perf_counter()
        for record in records:
            self.arrays[Path(record.image_path)] = load_image(record.image_path)
        self.seconds_per_image = (time.perf_counter() - started) / len(records)
        self.served = 0

    def __getitem__(self, record: ImageRecord) -> np.ndarray:
        return self.arrays[Path(record.image_path)]

    def _load_image(self, path, max_pixels=None) -> np.ndarray:
        self.served += 1
        # Not copied: every detector converts it to a float tensor (a copy) before any in-place step.
        return self.arrays[Path(path)]

    @contextmanager
    def serving(self):
        with ExitStack() as stack:
            for name in DECODING_MODULES:
                stack.enter_context(mock.patch.object(importlib.import_module(name), "load_image", self._load_image))
            yield


def _set_precision(name: str, detector, precision: str) -> None:
    """Every precision switch, done before timing."""
    detector.set_precision(precision)
    if name.startswith("sppnet"):
        # SPP-net's set_precision covers its fc layers; FeatureCache.compute would switch the trunk's
        # weights to channels-last and back inside every call, so the bench does it once, here.
        detector.cache.trunk.eval()
        prepare(detector.cache.trunk, precision)


def _detect(name: str, detector, record: ImageRecord, decoded: _DecodedImages, proposals: torch.Tensor,
            precision: str) -> None:
    """One detection of one image, from its decoded pixels."""
    if name.startswith("sppnet"):
        image = to_tensor(decoded[record])  # outside the stages, as R-CNN and Fast R-CNN do
        with stage(detector.timer, "conv"):
            maps = detector.cache.compute_image(image, variants=(False,), precision=precision)
        detector.detect(record, proposals, maps={scale: m for (scale, _), m in maps.items()})
        return
    served = decoded.served
    detector.detect(record, proposals)
    if decoded.served == served:
        raise RuntimeError(f"{name} decoded {record.image_path} without load_image, inside the timed region: "
                           "add its module to DECODING_MODULES")


def _time_one(name: str, detector, record: ImageRecord, decoded: _DecodedImages, proposals: torch.Tensor,
              precision: str) -> dict[str, float]:
    timer = StageTimer()
    detector.timer = timer
    started = time.perf_counter()
    _detect(name, detector, record, decoded, proposals, precision)
    total = time.perf_counter() - started
    detector.timer = None
    return {**{s: timer.seconds.get(s, 0.0) for s in STAGES}, "total": total}


def measure_speed(config: DetectBenchConfig, dataset: DetectionDataset, proposals: dict, work: Path, log=print) -> dict:
    """``seconds_per_image`` ``{system: {precision: {stage: s}}}``, the work
    done (``throughput``: ``{system: {precision: {gflop_per_image,
    gflop_per_second, peak_fraction}}}``), the machine's
    ``matmul_peak_gflops`` per precision and ``decode_seconds_per_image``."""
    detectors = _timing_detectors(config, dataset.classes, work)
    records = [r for r in dataset.images if r.image_id in proposals][: config.timing_images]
    if not records:
        raise ValueError(f"no readable images in the {dataset.split} split to time")
    decoded = _DecodedImages(records)
    peak = {p: matmul_peak_gflops(DTYPES[p], config.matmul_size) for p in config.precisions}
    speed: dict = {}
    throughput: dict = {}
    with decoded.serving():
        for precision in config.precisions:
            for name, detector in detectors.items():
                _set_precision(name, detector, precision)
                # Warm-up: every timed image once, untimed (see the module docstring); it counts the FLOPs too.
                with FlopCounter() as counter:
                    for record in records:
                        _detect(name, detector, record, decoded, proposals[record.image_id], precision)
                runs = [_time_one(name, detector, r, decoded, proposals[r.image_id], precision) for r in records]
                seconds = {k: sum(run[k] for run in runs) / len(runs) for k in runs[0]}
                gflop = counter.flops / len(records) / 1e9
                rate = gflop / seconds["total"]
                speed.setdefault(name, {})[precision] = seconds
                throughput.setdefault(name, {})[precision] = {
                    "gflop_per_image": gflop, "gflop_per_second": rate, "peak_fraction": rate / peak[precision]}
                log(f"  {name} {precision}: {seconds['total']:.3f} s per image ({len(runs)} image(s), "
                    f"{len(proposals[records[0].image_id])} windows), {gflop:.1f} GFLOP, {rate:.1f} GFLOP/s "
                    f"({rate / peak[precision]:.0%} of the {precision} matmul peak)")
    return {"seconds_per_image": speed, "throughput": throughput, "matmul_peak_gflops": peak,
            "decode_seconds_per_image": decoded.seconds_per_image}


def _train_and_evaluate(config: DetectBenchConfig, data: Path, work: Path, log=print) -> dict:
    """VOC07 mAP of each system trained from its tiny preset on one pre-trained trunk."""
    from sppnet.engine.detection_stages import detect_dataset
    from sppnet.engine.detectors import METHODS
    from sppnet.engine.fast_rcnn import compress_run, load_fast_rcnn
    from sppnet.engine.pretrain import pretrain_backbone
    from sppnet.engine.sppnet_detection import SPPNetConfig
    from sppnet.evaluation.voc import evaluate_detections

    train = open_detection_dataset(data, config.train_split)
    test = open_detection_dataset(data, config.split)
    # The shared trunk is the classifier SPP-net's preset pre-trains (the generic classifier, as it has no
    # crop stage); SPP-net's in-context stage (if its preset has one) is its own.
    pretrain = replace(load_config(SPPNetConfig, "detect-sppnet-tiny").pretrain, context_preset=None)
    backbone = pretrain_backbone(pretrain, train, work / "shared", None, config.seed,
                                 log=lambda m: None if "pretrain: epoch" in m else log(f"  {m}"))
    runs = {
        "rcnn": ("rcnn", []),
        "sppnet-1": ("sppnet", ["scales=[384]", "train_scales=null"]),
        "sppnet-5": ("sppnet", ["scales=[192,288,384,512,640]", "train_scales=null"]),
        "fast-rcnn": ("fast-rcnn", []),
    }
    detectors, seconds = {}, {}
    for name, (method_name, overrides) in runs.items():
        method = METHODS[method_name]
        settings = load_config(method.config_type, method.default_preset,
                               overrides + list(config.extra_overrides.get(method_name, [])))
        run_dir = work / f"run-{name}"
        log(f"training {name} ({method.default_preset} {' '.join(overrides)})")
        started = time.perf_counter()
        detectors[name] = method.trainer(settings, train, data, run_dir, backbone=backbone, resume=run_dir.exists(),
                                         log=lambda m: None)
        seconds[name] = time.perf_counter() - started
    svd_dir = work / "run-fast-rcnn-svd"
    if not (svd_dir / "model.safetensors").is_file():
        compress_run(work / "run-fast-rcnn", svd_dir, config.tiny_svd_ranks)
    detectors["fast-rcnn-svd"] = load_fast_rcnn(svd_dir)
    quality: dict = {}
    for name, detector in detectors.items():
        for precision in config.precisions:
            detector.set_precision(precision)
            per_class, per_image = detect_dataset([detector], test, data, log=lambda m: None)
            value = evaluate_detections(per_class, test, "voc07").map
            quality.setdefault(name, {})[precision] = {"map": value, "seconds_per_image": per_image}
            log(f"  {name} {precision}: VOC07 mAP {100 * value:.1f} ({per_image:.3f} s per image)")
        detector.set_precision("fp32")
    return {"map": quality, "training_seconds": seconds}


def _ratios(speed: dict, quality: dict | None) -> dict:
    def extraction(name: str) -> float:
        stages = speed[name]["fp32"]
        return stages["conv"] + stages["pooling"]

    out = {
        "speedup_sppnet1_vs_rcnn": extraction("rcnn") / extraction("sppnet-1"),
        "speedup_sppnet5_vs_rcnn": extraction("rcnn") / extraction("sppnet-5"),
        "speedup_sppnet1_vs_rcnn_total": speed["rcnn"]["fp32"]["total"] / speed["sppnet-1"]["fp32"]["total"],
        "speedup_fastrcnn_vs_sppnet5": speed["sppnet-5"]["fp32"]["total"] / speed["fast-rcnn"]["fp32"]["total"],
        "speedup_fastrcnn_vs_rcnn": speed["rcnn"]["fp32"]["total"] / speed["fast-rcnn"]["fp32"]["total"],
        "svd_fc_time_reduction": 1 - speed["fast-rcnn-svd"]["fp32"]["fc"] / speed["fast-rcnn"]["fp32"]["fc"],
        "svd_total_time_reduction": 1 - speed["fast-rcnn-svd"]["fp32"]["total"] / speed["fast-rcnn"]["fp32"]["total"],
    }
    if "bf16" in speed["rcnn"]:
        for name in speed:
            out[f"bf16_speedup_{name}"] = speed[name]["fp32"]["total"] / speed[name]["bf16"]["total"]
    if quality:
        maps = quality["map"]
        out["svd_map_loss_points"] = 100 * (maps["fast-rcnn"]["fp32"]["map"] - maps["fast-rcnn-svd"]["fp32"]["map"])
        for name in maps:
            if "bf16" in maps[name]:
                out[f"bf16_map_loss_points_{name}"] = 100 * (maps[name]["fp32"]["map"] - maps[name]["bf16"]["map"])
    return out


def run_detect_bench(data: str | Path, work: str | Path, config: DetectBenchConfig = DetectBenchConfig(),
                     log=print) -> dict:
    """Both parts; returns the JSON-ready summary."""
    data, work = Path(data), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = open_detection_dataset(data, config.split)
    for item in dataset.skipped:
        log(f"skipped: {item}")
    # A dense grid (stride a quarter of the window) so that even small images get `windows` boxes.
    proposal_config = ProposalConfig(method=config.proposals, max_proposals=config.windows, resize_to=None,
                                     grid_stride=0.25)
    run = compute_proposals(dataset.images[: config.timing_images + 2], proposal_config,
                            work / "proposals", progress=False)
    for item in run.skipped:
        log(f"skipped: {item}")
    short = {k: len(v) for k, v in run.boxes.items() if len(v) < config.windows}
    if short:
        log(f"note: fewer than {config.windows} windows on {len(short)} image(s): {short}")
    log(f"timing every system on the same {config.timing_images} image(s) of {data} ({config.split}), "
        f"{config.windows} {config.proposals} windows each, ZF-5 width {config.width}, {torch.get_num_threads()} threads")
    try:
        measured = measure_speed(config, dataset, run.boxes, work, log)
    except ImageError as error:
        raise ValueError(f"cannot time on {data}: {error}") from None
    quality = _train_and_evaluate(config, data, work, log) if config.train else None
    speed = measured["seconds_per_image"]
    summary = {
        "config": asdict(config),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "matmul_peak_gflops": measured["matmul_peak_gflops"]},
        "seconds_per_image": speed,
        "throughput": measured["throughput"],
        "decode_seconds_per_image": measured["decode_seconds_per_image"],
        **({"quality": quality} if quality else {}),
        **_ratios(speed, quality),
    }
    return summary


def format_tables(summary: dict) -> str:
    """Markdown tables of a summary (speed, then quality and ratios)."""
    config, machine = summary["config"], summary["machine"]
    peaks = ", ".join(f"{p} {value:.0f}" for p, value in machine["matmul_peak_gflops"].items())
    size = config["matmul_size"]
    lines = [f"Speed: seconds per image, every system on the same {config['timing_images']} image(s), "
             f"{config['windows']} {config['proposals']} windows, ZF-5 width {config['width']}, "
             f"fc {config['hidden']}, {machine['threads']} threads; image decoding "
             f"({summary['decode_seconds_per_image']:.3f} s per image) is done before timing, in no total. "
             f"GFLOP: conv and fc layers per image; of peak: GFLOP/s over the best {size} x {size} x {size} "
             f"torch.mm in the same precision ({peaks} GFLOP/s).", "",
             "| system | precision | conv | pooling | fc | classifier | NMS | total | GFLOP | GFLOP/s | of peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, per_precision in summary["seconds_per_image"].items():
        for precision, stages in per_precision.items():
            work = summary["throughput"][name][precision]
            cells = " | ".join(f"{stages[s]:.3f}" for s in (*STAGES, "total"))
            lines.append(f"| {name} | {precision} | {cells} | {work['gflop_per_image']:.1f} | "
                         f"{work['gflop_per_second']:.1f} | {100 * work['peak_fraction']:.1f}% |")
    if "quality" in summary:
        lines += ["", "Quality: VOC07 mAP (%) on the generated test split, tiny presets, one shared pre-trained trunk.", "",
                  "| system | " + " | ".join(config["precisions"]) + " | training s |",
                  "|---|" + "---|" * len(config["precisions"]) + "---|"]
        for name, per_precision in summary["quality"]["map"].items():
            cells = " | ".join(f"{100 * per_precision[p]['map']:.1f}" for p in config["precisions"])
            seconds = summary["quality"]["training_seconds"].get(name)
            lines.append(f"| {name} | {cells} | {'' if seconds is None else f'{seconds:.0f}'} |")
    lines += ["", "| ratio | value |", "|---|---|"]
    for key, value in summary.items():
        if key.startswith(("speedup_", "svd_", "bf16_")):
            lines.append(f"| {key} | {value:.2f} |")
    return "\n".join(lines) + "\n"


def write_results_section(path: Path, tables: str, command: str) -> None:
    """Replace (or append) the bench section of a RESULTS.md file."""
    from sppnet.atomic import atomic_write_text

    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    section = f"{SECTION_START}\n## Detection systems side by side (`sppnet bench detect`)\n\nCommand: `{command}`\n\n{tables}{SECTION_END}"
    if SECTION_START in text and SECTION_END in text:
        before, rest = text.split(SECTION_START, 1)
        after = rest.split(SECTION_END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write_text(path, text)


def save_summary(summary: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
