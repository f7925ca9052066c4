"""Pre-training a conv trunk when no ImageNet weights are at hand (all detectors).

No weights can be downloaded here, so without ``--backbone`` a detector with
the crop stage (``pretrain.crop_stage``, the default; the tiny presets have
none, see below) first trains an SPP classifier on the training set's ground-truth crops (one
folder per class) and background crops (IoU < 0.3 with every object), written
as an image folder to ``RUN/pretrain-data/``. The classifier run in
``RUN/pretrain/`` then plays the role of the paper's ImageNet model: its conv
layers are the detector's trunk and its fc6/fc7 initialise the detector's.

With no ImageNet weights, their role can be played by generated data
(``pretrain.generic_images``, the tiny presets): the classifier's trunk
starts from one trained on many generated shape classes, made once per
machine and cached (``engine/generic_pretrain.py``). With
``pretrain.crop_stage: false`` there is no crop classifier at all:
``RUN/pretrain`` is a copy of that generic classifier (trunk and fc6/fc7), and
the detector's own training is the only training on the detection set, as in
the papers, whose detectors start from the ImageNet model.

With ImageNet weights on disk (``pretrain.weights``, the CLI's
``--backbone-weights FILE``: a torchvision AlexNet, VGG16 or ResNet-18/50
state_dict or safetensors file, told apart by its keys), the classifier's
trunk starts from them instead of from scratch; the crops then fine-tune it
and train its fc layers (ImageNet's fc layers expect a single 6 x 6 or 7 x 7
pool, not the pyramid, so they are not used).

In context (``pretrain.context_preset``, SPP-net's tiny preset): a trunk that
only ever saw isolated, zero-padded crops names far fewer objects when their
windows are pooled from a whole image's conv5 map (benchmarks/window_transfer.py:
78% as crops, 51% pooled, three held-out sets), and SPP-net keeps conv5
frozen. ImageNet's images are whole scenes; here the trunk pre-trained in
the run (a ``--backbone`` is used as given) is trained further as a Fast
R-CNN with that preset on the detection training set, i.e. on windows pooled
from whole-image maps, before the detector freezes it. ``RUN/pretrain-context-fast-rcnn`` is that run and
``RUN/pretrain-context`` the classifier run the detector then uses: the
first trunk's classifier with the in-context trunk, and with
``pretrain.context_fc`` (SPP-net's tiny preset) the Fast R-CNN's fc6/fc7 too.
``pretrain.context_overrides`` change that preset for this stage only (SPP-net's
tiny preset keeps the papers' RoI sampling there, without Fast R-CNN's OHEM).
The stage trains on the detector's own proposals (its proposal settings, unless
the overrides name them), so the two share one proposal cache.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from sppnet.atomic import atomic_replace
from sppnet.config import ConfigError, load_config, preset_names
from sppnet.data.images import ImageError, load_image
from sppnet.data.records import DetectionDataset
from sppnet.engine import distributed
from sppnet.engine.classification import ClassifyConfig, load_classifier, train_classifier
from sppnet.engine.generic_pretrain import generic_classifier, generic_classify_config, generic_trunk
from sppnet.engine.run_folder import open_run_folder, record_backbone
from sppnet.engine.schedule import scaled_steps
from sppnet.proposals import ProposalSettings
from sppnet.ops import box_iou

if TYPE_CHECKING:  # engine.fast_rcnn's config holds a PretrainConfig: imported where used
    from sppnet.engine.fast_rcnn import FastRCNNConfig

__all__ = ["PretrainConfig", "grown_box", "pretrain_backbone", "start_detector_run", "pretrain_classify_config",
           "write_pretrain_crops", "torchvision_architecture", "train_in_context", "context_fast_rcnn_config"]


def torchvision_architecture(weights: str | Path) -> str:
    """Which torchvision trunk a weights file is for: the one it loads into strictly."""
    from sppnet.models.backbones import build_backbone
    from sppnet.models.backbones.torchvision_trunks import TORCHVISION_TRUNKS

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    for name in TORCHVISION_TRUNKS:
        try:
            build_backbone(name, weights=path)
        except ValueError:
            continue
        return name
    raise ValueError(f"{path} holds the weights of none of the torchvision trunks {TORCHVISION_TRUNKS} "
                     "(a state_dict of the full model or of its trunk)")


@dataclass(frozen=True)
class PretrainConfig:
    preset: str = "classify-crops-tiny"  # classifier preset used to pre-train the trunk
    epochs: int | None = None  # None: the preset's
    background_per_image: int = 2  # background crops (IoU < 0.3 with every object) per image
    min_crop: int = 8  # ground-truth boxes smaller than this are not used as crops
    # Each object crop is the box grown by ``context`` about its centre (R-CNN's
    # 16 pixels of context on a 224 warp is 1.17), clipped to the image, and,
    # with ``warp``, resized to ``warp`` x ``warp`` pixels, whatever its aspect
    # ratio. The classifier's training crop then shows the whole object, as the
    # detector's window does; without it, a 3:1 box resized to shorter side 110
    # and cropped to 96 x 96 shows a third of the object.
    context: float = 1.0
    warp: int | None = None
    weights: Path | None = None  # local torchvision ImageNet weights for the trunk (alexnet/vgg16/resnet18/resnet50)
    # A Fast R-CNN preset (e.g. detect-fast-rcnn-tiny) that trains the trunk
    # pre-trained here further, on the detection set's windows pooled from whole
    # images (see the module docstring); None: the crop-trained trunk is used.
    context_preset: str | None = None
    # ``--set``-style changes to that preset for this stage only (``train.sampling.bg_low=0.1``),
    # applied before ``context_iterations`` and ``context_warmup_iterations``; unused without
    # a context_preset (so that ``--set pretrain.context_preset=null`` alone turns the stage off)
    context_overrides: tuple[str, ...] = ()
    context_iterations: int | None = None  # None: the preset's
    context_warmup_iterations: int | None = None  # the Fast R-CNN's lr warm-up; None: the preset's
    # True: the in-context classifier takes the Fast R-CNN's fc6 and fc7 too
    # (trained with the trunk it hands over), fc6's columns of pyramid levels
    # the Fast R-CNN did not pool at zeroed; False: the first classifier's fc
    # layers, trained on another trunk's conv5, go with the in-context trunk.
    context_fc: bool = False
    # ImageNet's stand-in (engine/generic_pretrain.py): the crop classifier
    # starts from a trunk trained first on this many generated images of 44
    # shape classes (sppnet.data.pretrain_set) for ``generic_epochs`` epochs,
    # made once per machine and cached; 0 = the crop stage starts from scratch.
    # Real ImageNet weights (``weights``) take its place: it is then skipped.
    generic_images: int = 0
    generic_epochs: int = 10
    # False: no crop stage; the detector starts from the generic classifier
    # itself (its trunk and fc6/fc7), as the papers' detectors start from the
    # ImageNet model. Needs the generic stage (generic_images > 0, no weights).
    crop_stage: bool = True

    def __post_init__(self) -> None:
        if not self.context >= 1.0:
            raise ValueError(f"pretrain.context must be >= 1 (the box grown about its centre), got {self.context}")
        if self.warp is not None and self.warp < 8:
            raise ValueError(f"pretrain.warp must be >= 8 pixels or null, got {self.warp}")
        if self.context_preset is not None and not (self.context_preset in preset_names()
                                                    or Path(self.context_preset).is_file()):
            raise ValueError(f"pretrain.context_preset {self.context_preset!r} is neither a preset "
                             f"({', '.join(preset_names())}) nor a file")
        if self.generic_images < 0 or self.generic_epochs < 1:
            raise ValueError(f"pretrain.generic_images must be >= 0 and generic_epochs >= 1, got "
                             f"{self.generic_images} and {self.generic_epochs}")
        if not self.crop_stage and (self.generic_images == 0 or self.weights is not None):
            raise ValueError("pretrain.crop_stage=false starts the detector from the generic classifier: it needs "
                             f"pretrain.generic_images > 0 and no pretrain.weights (got {self.generic_images} and "
                             f"{self.weights}); set pretrain.crop_stage=true to pre-train on the set's crops instead")
        if self.context_overrides and self.context_preset is not None:
            context_fast_rcnn_config(self)  # a wrong key or value is told now, not after the stages before it
        if self.context_iterations is not None and self.context_iterations < 1:
            raise ValueError(f"pretrain.context_iterations must be >= 1 or null, got {self.context_iterations}")
        if self.context_warmup_iterations is not None and self.context_warmup_iterations < 0:
            raise ValueError(f"pretrain.context_warmup_iterations must be >= 0 or null, got {self.context_warmup_iterations}")


def write_pretrain_crops(dataset: DetectionDataset, out: Path, config: PretrainConfig, seed: int) -> None:
    """An image folder of ground-truth crops (by class) and background crops."""
    generator = torch.Generator().manual_seed(seed)
    for record in dataset.images:
        try:
            image = load_image(record.image_path)
        except ImageError:
            continue
        height, width = image.shape[:2]
        for index, (box, label) in enumerate(zip(record.boxes.tolist(), record.labels.tolist())):
            if min(box[2] - box[0], box[3] - box[1]) < config.min_crop:
                continue
            x1, y1, x2, y2 = grown_box(box, config.context, width, height)
            path = out / dataset.classes[label] / f"{record.image_id}_{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            crop = Image.fromarray(image[y1:y2, x1:x2])
            if config.warp is not None:
                crop = crop.resize((config.warp, config.warp), Image.BILINEAR)
            crop.save(path)
        made, tries = 0, 0
        while made < config.background_per_image and tries < 50:
            tries += 1
            side = int(torch.randint(24, max(25, min(height, width)), (1,), generator=generator))
            x = int(torch.randint(0, width - side + 1, (1,), generator=generator))
            y = int(torch.randint(0, height - side + 1, (1,), generator=generator))
            crop_box = torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32)
            if len(record.boxes) and float(box_iou(crop_box, record.boxes).max()) >= 0.3:
                continue
            path = out / dataset.classes[0] / f"{record.image_id}_bg{made}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[y : y + side, x : x + side]).save(path)
            made += 1


def grown_box(box: list[float], factor: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` scaled by ``factor`` about its centre, rounded to pixels, inside the image."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half_w, half_h = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    x1, y1 = max(0, int(round(cx - half_w))), max(0, int(round(cy - half_h)))
    x2, y2 = min(width, int(round(cx + half_w))), min(height, int(round(cy + half_h)))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def pretrain_classify_config(config: PretrainConfig, trunk_weights: Path | None = None) -> ClassifyConfig:
    """The classifier config that pre-trains the trunk on the crops:
    ``config.preset`` with the pre-training's epochs and weights (or
    ``trunk_weights``, a file of the preset's own trunk), and no validation split."""
    overrides = ["train.val_split=null"]
    if trunk_weights is not None:
        overrides.append(f"model.weights={Path(trunk_weights).resolve()}")
    if config.epochs:
        # The preset's lr steps stay at the same fraction of the run: classify-crops-tiny's
        # step after 20 of 25 epochs is a step after 32 of 40, not after 20 of 40
        # (which spent half the run at lr / 10 with the crops' training error at 20%).
        preset = load_config(ClassifyConfig, config.preset).train
        steps = list(scaled_steps(preset.lr_steps, preset.epochs, config.epochs))
        # Epochs given here are the run's length on the crops: the preset's
        # minimum of iterations (for small image folders) does not stretch them.
        overrides += [f"train.epochs={config.epochs}", f"train.lr_steps={steps}", "train.min_iterations=0"]
    if config.weights is not None:
        architecture = torchvision_architecture(config.weights)
        overrides += [f"model.backbone={architecture}", "model.width=1.0", f"model.weights={Path(config.weights).resolve()}"]
    return load_config(ClassifyConfig, config.preset, overrides)


def pretrain_backbone(config: PretrainConfig, train: DetectionDataset, run_dir: Path, backbone: Path | None,
                      seed: int, log=print, data_root: Path | None = None,
                      proposals: ProposalSettings | None = None) -> Path:
    """The classifier run whose trunk the detector uses: ``backbone`` when
    given (used as it is, like the paper's ImageNet model), else the one
    pre-trained here: ``RUN/pretrain`` (trained now, or resumed, unless
    finished) and, with ``config.context_preset``, its trunk trained further
    in context (``RUN/pretrain-context``; ``data_root`` holds the proposal cache,
    ``proposals`` are the detector's proposal settings)."""
    if backbone is not None:
        return Path(backbone)
    if config.crop_stage:
        classifier_run = _crop_classifier(config, train, run_dir, seed, log)
    else:
        classifier_run = _generic_classifier_copy(config, run_dir, log)
    if config.context_preset is None:
        return classifier_run
    return train_in_context(config, train, data_root, run_dir, classifier_run, log, proposals)


def context_fast_rcnn_config(config: PretrainConfig, proposals: ProposalSettings | None = None) -> FastRCNNConfig:
    """The in-context stage's Fast R-CNN config: ``config.context_preset`` with
    ``context_overrides``, ``context_iterations`` (lr steps scaled with it) and
    ``context_warmup_iterations``, and no pre-training of its own (the trunk is given).
    ``proposals`` (the detector's config): its proposal settings replace the
    preset's, except those ``context_overrides`` set."""
    from sppnet.engine.fast_rcnn import FastRCNNConfig

    try:
        fast_config = load_config(FastRCNNConfig, config.context_preset, list(config.context_overrides))
    except ConfigError as error:
        raise ValueError(f"the in-context stage's preset {config.context_preset} with pretrain.context_overrides "
                         f"{list(config.context_overrides)}: {error}") from None
    fast_config = replace(fast_config, pretrain=replace(fast_config.pretrain, context_preset=None))
    if proposals is not None:
        overridden = {override.split("=", 1)[0].strip() for override in config.context_overrides}
        fast_config = replace(fast_config, **{field.name: getattr(proposals, field.name)
                                              for field in fields(ProposalSettings) if field.name not in overridden})
    if config.context_iterations is not None:
        preset = fast_config.train
        steps = scaled_steps(preset.lr_steps, preset.iterations, config.context_iterations)
        fast_config = replace(fast_config, train=replace(preset, iterations=config.context_iterations, lr_steps=steps))
    if config.context_warmup_iterations is not None:
        fast_config = replace(fast_config, train=replace(fast_config.train,
                                                         warmup_iterations=config.context_warmup_iterations))
    return fast_config


def train_in_context(config: PretrainConfig, train: DetectionDataset, data_root: Path | None, run_dir: Path,
                     trunk_run: Path, log=print, proposals: ProposalSettings | None = None) -> Path:
    """``trunk_run``'s classifier with its trunk trained as a Fast R-CNN
    (``context_fast_rcnn_config``, on ``proposals``' settings) on ``train``:
    ``RUN/pretrain-context`` (made now unless done; an interrupted Fast R-CNN
    run is resumed)."""
    from sppnet.engine.checkpoint import save_weights
    from sppnet.engine.fast_rcnn_training import train_fast_rcnn
    from sppnet.engine.classification import load_classifier
    from sppnet.models.detection.fast_rcnn import load_head_fc

    out = run_dir / "pretrain-context"
    if (out / "model.safetensors").is_file():
        return out
    if data_root is None:
        raise ValueError("training the trunk in context needs the data root (for its proposal cache)")
    fast_config = context_fast_rcnn_config(config, proposals)
    changes = "".join(f", {change}" for change in config.context_overrides)
    log(f"training the trunk in context: Fast R-CNN ({config.context_preset}{changes}, "
        f"{fast_config.train.iterations} iterations) "
        "on windows pooled from whole training images")
    fast_run = run_dir / "pretrain-context-fast-rcnn"
    detector = train_fast_rcnn(fast_config, train, data_root, fast_run, backbone=trunk_run, resume=fast_run.is_dir(),
                               log=lambda message: log(f"  in context: {message}"))
    if distributed.is_main():
        classifier, _, _ = load_classifier(trunk_run)
        classifier.trunk.load_state_dict(detector.model.trunk.state_dict())
        if config.context_fc:
            load_head_fc(classifier, detector.model.head, tuple(fast_config.levels))
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "classes.txt"):
            (out / name).write_bytes((Path(trunk_run) / name).read_bytes())
        save_weights(out / "model.safetensors", classifier.state_dict())  # written last: it marks the stage done
    distributed.barrier()
    return out


def _crop_classifier(config: PretrainConfig, train: DetectionDataset, run_dir: Path, seed: int, log) -> Path:
    """``RUN/pretrain``: the SPP classifier trained on the training set's crops."""
    classifier_run = run_dir / "pretrain"
    if (classifier_run / "model.safetensors").is_file():
        return classifier_run
    log("no --backbone given: pre-training the trunk as an SPP classifier on ground-truth and background crops")
    crops = run_dir / "pretrain-data"
    if not (crops / "train").is_dir() and distributed.is_main():
        write_pretrain_crops(train, crops / "train", config, seed)
    resume = (classifier_run / "checkpoint.safetensors").is_file()
    distributed.barrier()  # rank 0 has written the crops; every rank has looked for a checkpoint
    start = None
    if config.generic_images and config.weights is None:
        start = generic_trunk(generic_classify_config(config.preset, config.generic_epochs), config.generic_images, log=log,
                              fallback=run_dir / "pretrain-generic")
    classify = pretrain_classify_config(config, start)
    if config.weights is not None:
        log(f"the trunk starts from {config.weights} ({classify.model.backbone})")
    # Under torchrun every rank trains its share of each mini-batch (DDP, see train_classifier).
    train_classifier(classify, crops, classifier_run, resume=resume,
                     progress=False, log=lambda message: log(f"  pretrain: {message}"))
    return classifier_run


def _generic_classifier_copy(config: PretrainConfig, run_dir: Path, log) -> Path:
    """``RUN/pretrain``: a copy of the generic stage's classifier run (no crop
    stage), so that the detector run holds and pins the model it started from."""
    out = run_dir / "pretrain"
    if (out / "model.safetensors").is_file():
        return out
    source = generic_classifier(generic_classify_config(config.preset, config.generic_epochs), config.generic_images,
                                log=log, fallback=run_dir / "pretrain-generic")
    log(f"no crop stage: the detector starts from the generic classifier {source}")
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "classes.txt"):
            (out / name).write_bytes((source / name).read_bytes())
        # The weights last and atomically: they mark the copy done.
        atomic_replace(out / "model.safetensors", lambda temp: shutil.copyfile(source / "model.safetensors", temp))
    distributed.barrier()
    return out


def start_detector_run(config, train: DetectionDataset, run_dir: Path, backbone: Path | None, seed: int,
                       resume: bool, log=print, data_root: Path | None = None):
    """Every detector run's first steps: open ``run_dir`` (new, or ``resume``
    with the same ``config``), pre-train the trunk (``config.pretrain``; a
    ``backbone`` run is used as given), pin it in ``backbone.txt`` and load
    it. Returns ``(classifier run folder, classifier)``."""
    open_run_folder(run_dir, config, resume, train.classes)
    classifier_run = pretrain_backbone(config.pretrain, train, run_dir, backbone, seed, log, data_root, proposals=config)
    record_backbone(run_dir, classifier_run)
    classifier, _, _ = load_classifier(classifier_run)
    return classifier_run, classifier
