"""Fast R-CNN runs (SPEC section 6): the configs, the model built from a
classifier run, the trained detector behind ``detect_dataset``'s interface,
loading a finished run and compressing its fc layers. Training is
``sppnet.engine.fast_rcnn_training``.

A run folder holds ``config.yaml``, ``classes.txt``, ``backbone.txt`` (the
classifier run whose trunk and fc6/fc7 start the model, and the SHA-256 of
its weights, checked when the run is loaded), ``checkpoint.safetensors``
while it trains and, when done, ``model.safetensors``; ``log.csv`` has the
losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import safe_open

from sppnet.config import from_dict
from sppnet.data.images import load_image
from sppnet.data.records import ImageRecord
from sppnet.engine.checkpoint import load_weights, save_weights
from sppnet.engine.classification import load_classifier
from sppnet.engine.detection_stages import RunDetector, TestConfig
from sppnet.engine.pretrain import PretrainConfig
from sppnet.engine.run_folder import read_classes, recorded_backbone
from sppnet.fast_path import PRECISIONS
from sppnet.models.classifier import SPPClassifier
from sppnet.models.detection.fast_rcnn import FAST_RCNN_STDS, FastRCNN, FastRCNNHead, RoISampling, fc6_for_levels
from sppnet.models.svd import compress_fc, compressed_ranks
from sppnet.proposals import ProposalSettings

__all__ = ["FastRCNNConfig", "FastRCNNTrainConfig", "FastRCNNDetector", "load_fast_rcnn", "build_fast_rcnn",
           "compress_run", "image_tensor"]


@dataclass(frozen=True)
class FastRCNNTrainConfig:
    iterations: int = 40000
    images_per_batch: int = 2
    sampling: RoISampling = field(default_factory=RoISampling)
    lr: float = 0.001
    lr_steps: tuple[int, ...] = (30000,)  # iterations after which lr /= 10
    warmup_iterations: int = 0  # the lr rises linearly from lr / warmup_iterations to lr over these first iterations
    momentum: float = 0.9
    weight_decay: float = 0.0005
    bias_lr_factor: float = 2.0
    frozen_convs: int = 1  # the first conv layers stay as pre-trained
    box_weight: float = 1.0  # lambda of the multi-task loss
    box_stds: tuple[float, float, float, float] = FAST_RCNN_STDS
    flip: bool = True
    channel_order: bool = False  # each image's colour channels in a random order (data.transforms.random_channel_order)
    checkpoint_every: int = 500
    seed: int = 0
    # "bf16": convs and fc layers in bfloat16 autocast (channels-last; weights, optimizer state
    # and losses stay float32), the CPU fast path of sppnet.fast_path, used for training too.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.warmup_iterations < 0:
            raise ValueError(f"train.warmup_iterations must be >= 0, got {self.warmup_iterations}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class FastRCNNConfig(ProposalSettings):
    scales: tuple[int, ...] = (600,)  # test scales (shorter side); several = multi-scale testing
    train_scales: tuple[int, ...] | None = None  # None: the test scales; several = multi-scale training
    max_side: int | None = 1000
    window_target: float = 224.0  # multi-scale testing: the scale where a RoI's area is closest to this squared
    levels: tuple[int, ...] = (6,)  # RoI pooling: (6,) small nets, (7,) VGG16; SPP levels (6, 3, 2, 1) as an option
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: FastRCNNTrainConfig = field(default_factory=FastRCNNTrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def __post_init__(self) -> None:
        if self.test.scorer not in (None, "softmax"):
            raise ValueError(f"Fast R-CNN scores with its softmax only; test.scorer must be null or softmax, "
                             f"got {self.test.scorer!r}")


def image_tensor(path: Path) -> torch.Tensor:
    """An image file as float ``[3, H, W]`` in [0, 1] (the detectors' input)."""
    return torch.from_numpy(load_image(path)).permute(2, 0, 1).float().div_(255)


def build_fast_rcnn(classifier: SPPClassifier, num_classes: int, config: FastRCNNConfig) -> FastRCNN:
    """A Fast R-CNN whose trunk, fc6 and fc7 come from a trained classifier."""
    levels = tuple(config.levels)
    head = FastRCNNHead(fc6_for_levels(classifier, levels), classifier.fc7, num_classes)
    return FastRCNN(classifier.trunk, head, levels, config.scales, config.max_side, config.train_scales,
                    config.window_target, config.train.sampling, config.train.box_stds, config.train.box_weight,
                    config.test.nms, config.test.top_k)


@dataclass
class FastRCNNDetector(RunDetector):
    """A trained model with what ``detect_dataset`` needs."""

    model: FastRCNN
    config: FastRCNNConfig

    @torch.no_grad()
    def detect(self, record: ImageRecord, proposals: torch.Tensor, box_regression: bool | None = None) -> dict:
        use_regression = self.test.box_regression if box_regression is None else box_regression
        self.model.eval()
        return self.model.predict([image_tensor(record.image_path)], [proposals], use_regression)[0]


def load_fast_rcnn(run_dir: str | Path) -> FastRCNNDetector:
    """The finished model of a Fast R-CNN run (``model.safetensors``; a run
    written by ``compress_run`` names its SVD ranks in the file's metadata)."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "classes.txt", "backbone.txt", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished Fast R-CNN run: {name} is missing")
    config = from_dict(FastRCNNConfig, yaml.safe_load((run_dir / "config.yaml").read_text()))
    classes = read_classes(run_dir)
    classifier, _, _ = load_classifier(recorded_backbone(run_dir))
    model = build_fast_rcnn(classifier, len(classes), config)
    with safe_open(run_dir / "model.safetensors", framework="pt") as handle:
        ranks = (handle.metadata() or {}).get("svd_ranks")
    if ranks:
        compress_fc(model.head, tuple(int(r) for r in ranks.split(",")))
    model.load_state_dict(load_weights(run_dir / "model.safetensors"))
    return FastRCNNDetector(model.eval(), config, classes)


def compress_run(run_dir: str | Path, out: str | Path, ranks: tuple[int, int]) -> dict:
    """A copy of a finished Fast R-CNN run whose fc6 and fc7 are replaced by
    their truncated SVDs (SPEC section 6); it loads and runs like any run."""
    import shutil

    run_dir, out = Path(run_dir), Path(out)
    from sppnet.engine.detectors import method_of_run

    if method_of_run(run_dir).name != "fast-rcnn":
        raise ValueError(f"{run_dir} is not a Fast R-CNN run: truncated SVD applies to Fast R-CNN's fc layers "
                         "(SPP-net's and R-CNN's SVMs were trained on the uncompressed fc7)")
    detector = load_fast_rcnn(run_dir)
    head = detector.model.head
    if compressed_ranks(head) is not None:
        raise ValueError(f"{run_dir} is already compressed (ranks {compressed_ranks(head)})")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output folder {out} is not empty")
    before = sum(p.numel() for block in (head.fc6, head.fc7) for p in block.parameters())
    shapes = {name: tuple(getattr(head, name)[0].weight.shape[::-1]) for name in ("fc6", "fc7")}
    compress_fc(head, ranks)
    after = sum(p.numel() for block in (head.fc6, head.fc7) for p in block.parameters())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "classes.txt", "backbone.txt"):
        shutil.copyfile(run_dir / name, out / name)
    save_weights(out / "model.safetensors", detector.model.state_dict(),
                 metadata={"svd_ranks": f"{ranks[0]},{ranks[1]}", "compressed_from": str(run_dir.resolve())})
    return {"fc6": f"{shapes['fc6'][0]} -> {ranks[0]} -> {shapes['fc6'][1]}",
            "fc7": f"{shapes['fc7'][0]} -> {ranks[1]} -> {shapes['fc7'][1]}",
            "parameters_before": before, "parameters_after": after}
