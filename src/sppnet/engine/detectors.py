"""The three detectors behind one interface: which config, trainer and loader
each method has, and which method a run folder holds (told by its
``config.yaml``: each method's config class accepts only its own keys)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import yaml

from sppnet.config import from_dict

__all__ = ["METHODS", "Method", "method_of_run", "load_detector", "detect_image_files"]


@dataclass(frozen=True)
class Method:
    name: str
    module: str  # sppnet.engine.<module>: the config class and the loader
    config_class: str
    train: str  # the trainer: a function of ``module``, or "<other module>.<function>"
    load: str
    default_preset: str

    def _get(self, attribute: str):
        """``attribute`` of ``sppnet.engine.<module>``, or of another engine
        module when written ``"<other module>.<attribute>"``."""
        module, _, name = attribute.rpartition(".")
        return getattr(importlib.import_module(f"sppnet.engine.{module or self.module}"), name)

    @property
    def config_type(self):
        return self._get(self.config_class)

    @property
    def trainer(self):
        return self._get(self.train)

    @property
    def loader(self):
        return self._get(self.load)


METHODS = {
    "sppnet": Method("sppnet", "sppnet_detection", "SPPNetConfig", "train_sppnet", "load_sppnet", "detect-sppnet-tiny"),
    "fast-rcnn": Method("fast-rcnn", "fast_rcnn", "FastRCNNConfig", "fast_rcnn_training.train_fast_rcnn",
                        "load_fast_rcnn", "detect-fast-rcnn-tiny"),
    "rcnn": Method("rcnn", "rcnn", "RCNNConfig", "train_rcnn", "load_rcnn", "detect-rcnn-tiny"),
}


def method_of_run(run_dir: str | Path) -> Method:
    """The method whose config class accepts the run's ``config.yaml``."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a detector run folder: {path.name} is missing")
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    for method in METHODS.values():
        try:
            from_dict(method.config_type, values)
        except (ValueError, TypeError):
            continue
        return method
    raise ValueError(f"{path} is not the config of any detector ({', '.join(METHODS)})")


def load_detector(run_dir: str | Path):
    """The trained detector of a run folder, whatever its method."""
    return method_of_run(run_dir).loader(run_dir)


def detect_image_files(detector, paths: Sequence[str | Path], proposal_cache: str | Path,
                       skipped: Callable[[str], None] = print) -> Iterator[tuple["ImageRecord", dict]]:  # noqa: F821
    """Detections on any image files, not a dataset: each readable image's
    proposals (the run's method and settings, cached under
    ``proposal_cache``), then ``detector.detect``. Yields ``(record,
    {"boxes", "labels", "scores"})`` image by image; an unreadable image is
    reported through ``skipped`` with its file and left out."""
    from sppnet.data.images import ImageError, image_size
    from sppnet.proposals import compute_proposals
    from sppnet.data.records import ImageRecord

    records = []
    for path in map(Path, paths):
        try:
            height, width = image_size(path)
        except ImageError as error:
            skipped(str(error))
            continue
        records.append(ImageRecord(path.stem, path, width, height))
    proposals = compute_proposals(records, detector.proposal_config, Path(proposal_cache), progress=False)
    for item in proposals.skipped:
        skipped(str(item))
    for record in records:
        if record.image_id in proposals.boxes:
            yield record, detector.detect(record, proposals.boxes[record.image_id])
