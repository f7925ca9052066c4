"""Region proposals: selective search, edge boxes or a dense grid, cached on disk.

Shapes and names::

    H, W   the image's height and width in pixels (as displayed)
    P      proposals of one image
    boxes  Tensor[P, 4] float32, xyxy, 0-based continuous pixels of the
           ORIGINAL image (DESIGN "Conventions"), clipped to [0, W] x [0, H]

Public API:

* :class:`ProposalConfig`: which method and its settings; ``key()`` is a short
  hash of every setting that changes the boxes (it names the cache folder).
* :func:`propose`: one image (``np.ndarray[H, W, 3]`` uint8 RGB) -> boxes.
* :class:`ProposalCache`: one ``.npz`` per image under
  ``root/<method>-<key>/``, validated by the SHA-256 of the image file.
* :func:`compute_proposals`: a list of :class:`ImageRecord` -> :class:`ProposalRun`
  (boxes by image id, what was skipped and why, cache statistics), in worker
  processes when asked.
* :func:`proposal_recall`: the fraction of non-difficult ground-truth boxes
  covered by some proposal at IoU >= t.

Methods (SPEC section 5 uses selective search in fast mode, ~2000 boxes):

* ``selective-search-fast`` / ``selective-search-quality``: OpenCV's graph
  segmentation and similarity strategies (``cv2.ximgproc.segmentation``) grouped
  by :mod:`sppnet.data.selective_search`, on the image resized so that its
  shorter side is ``resize_to``, in the algorithm's ranking order. The ranking's
  random draws are sppnet's own, so the same image always gives the same list,
  in any thread or process.
* ``edge-boxes``: OpenCV's structured edge detector + EdgeBoxes. It needs the
  trained structured-edge model (OpenCV's ``model.yml.gz``), which sppnet does
  not ship and cannot download: the user supplies the file (``edge_model``).
* ``grid``: dense sliding windows (no image content used), deterministic.

Needs ``opencv-contrib-python-headless`` for the OpenCV methods (imported only
when one is used).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import re
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from sppnet.atomic import atomic_replace
from sppnet.data.images import load_image
from sppnet.data.selective_search import selective_search
from sppnet.data.records import ImageRecord, Skipped

__all__ = [
    "METHODS",
    "ProposalConfig",
    "propose",
    "ProposalCache",
    "ProposalRun",
    "compute_proposals",
    "proposal_recall",
    "file_sha256",
]

METHODS = ("selective-search-fast", "selective-search-quality", "edge-boxes", "grid")

# Bumped whenever the algorithm or the file layout changes the stored boxes; it
# is part of every config key, so old cache folders are simply not used.
_FORMAT_VERSION = 2  # 2: selective search groups in sppnet (ties in similarity broken by region index)

# ============================================================================ config


@dataclass(frozen=True)
class ProposalConfig:
    """Settings of one proposal method (every field is validated).

    Only the fields that change the boxes of the chosen method enter
    :meth:`key` (e.g. the grid settings do not matter for selective search).
    """

    # Which proposal algorithm: one of METHODS.
    method: str = "selective-search-fast"
    # Keep at most this many boxes per image (the first ones in the method's
    # ranking; for the grid an evenly spread subset).
    max_proposals: int = 2000
    # Drop boxes whose width or height is below this many pixels of the ORIGINAL
    # image (0 keeps every box of positive size).
    min_size: int = 16
    # Resize the image so that its shorter side is this many pixels before
    # searching (up or down); boxes are mapped back to the original pixels.
    # None searches at the native size. The grid ignores it (its windows are
    # fractions of the image's size).
    resize_to: int | None = 500
    # The structured-edge model file for edge boxes (e.g. OpenCV's
    # model.yml.gz), which the USER must supply; required for "edge-boxes".
    edge_model: Path | None = None
    # EdgeBoxes step size of the sliding-window search (OpenCV's alpha).
    edge_alpha: float = 0.65
    # EdgeBoxes NMS threshold between proposals (OpenCV's beta).
    edge_beta: float = 0.75
    # Grid: side of the square window of each scale, as a fraction of the
    # image's shorter side (a window of aspect ratio r keeps the same area).
    grid_scales: tuple[float, ...] = (0.1, 0.2, 0.32, 0.5, 0.75)
    # Grid: aspect ratios height / width of the windows.
    grid_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # Grid: step between neighbouring windows as a fraction of the window's own
    # width (horizontally) and height (vertically); windows are spread evenly
    # from one border to the other with at most this step. With the defaults a
    # 500 x 375 image gets 2,078 windows (then max_proposals applies).
    grid_stride: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown proposal method {self.method!r}; choose one of: {', '.join(METHODS)}")
        _check_int("max_proposals", self.max_proposals, minimum=1)
        _check_int("min_size", self.min_size, minimum=0)
        if self.resize_to is not None:
            _check_int("resize_to", self.resize_to, minimum=1)
        for name in ("edge_alpha", "edge_beta", "grid_stride"):
            value = getattr(self, name)
            if not _is_positive_number(value):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("grid_scales", "grid_aspect_ratios"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
                raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
            for value in values:
                if not _is_positive_number(value):
                    raise ValueError(f"{name} must hold positive numbers, got {value!r} in {values!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if self.edge_model is not None:
            object.__setattr__(self, "edge_model", Path(self.edge_model))
        if self.method == "edge-boxes":
            if self.edge_model is None:
                raise ValueError(
                    "edge-boxes needs the structured edge detection model file (OpenCV's model.yml.gz), "
                    "which sppnet does not ship: the user must supply the structured edge model file "
                    "and pass its path as edge_model"
                )
            if not self.edge_model.is_file():
                raise FileNotFoundError(
                    f"structured edge model file not found: {self.edge_model} (edge-boxes needs the model file, "
                    "e.g. OpenCV's model.yml.gz, which the user must supply)"
                )

    def key(self) -> str:
        """A short stable hash (12 hex digits) of the settings that change the boxes."""
        return hashlib.sha256(json.dumps(self._key_fields(), sort_keys=True).encode()).hexdigest()[:12]

    def _key_fields(self) -> dict:
        out: dict = {
            "version": _FORMAT_VERSION,
            "method": self.method,
            "max_proposals": self.max_proposals,
            "min_size": self.min_size,
        }
        if self.method == "grid":
            out.update(
                grid_scales=list(self.grid_scales),
                grid_aspect_ratios=list(self.grid_aspect_ratios),
                grid_stride=float(self.grid_stride),
            )
        else:
            out["resize_to"] = self.resize_to
        if self.method == "edge-boxes":
            assert self.edge_model is not None  # checked in __post_init__
            out.update(
                edge_model_sha256=file_sha256(self.edge_model),
                edge_alpha=float(self.edge_alpha),
                edge_beta=float(self.edge_beta),
            )
        return out


def _is_positive_number(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
        and value > 0
    )


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ============================================================================ hashing


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; a file whose size and mtime have not
    changed is not read again."""
    path = Path(path)
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return _sha256_uncached(Path(path))


def _sha256_uncached(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ============================================================================ proposing


def propose(image: np.ndarray, config: ProposalConfig) -> Tensor:
    """Region proposals for one image.

    Args:
        image: ``np.ndarray[H, W, 3]`` uint8 RGB (as :func:`load_image` returns).
        config: the method and its settings.

    Returns:
        ``Tensor[P, 4]`` float32 xyxy boxes in the image's pixels, clipped to
        [0, W] x [0, H], without duplicates, width and height >= ``min_size``
        (and > 0), at most ``max_proposals``, in the method's ranking order.
    """
    return torch.from_numpy(_propose_array(image, config))


def _propose_array(image: np.ndarray, config: ProposalConfig) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be an np.ndarray[H, W, 3] uint8 RGB, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an np.ndarray[H, W, 3] uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"image has no pixels: shape {image.shape}")

    if config.method == "grid":
        boxes = _grid_windows(width, height, config.grid_scales, config.grid_aspect_ratios, config.grid_stride)
        return _finish(boxes, width, height, config, spread=True)

    search, sx, sy = _resized(image, config.resize_to)
    if config.method == "edge-boxes":
        xywh = _edge_boxes(search, config)
    else:
        xywh = _selective_search(search, quality=config.method == "selective-search-quality")
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    boxes *= np.array([sx, sy, sx, sy])
    return _finish(boxes, width, height, config, spread=False)


def _finish(boxes: np.ndarray, width: int, height: int, config: ProposalConfig, spread: bool) -> np.ndarray:
    """Clip, drop small boxes, deduplicate (first occurrence wins), cap the count."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(axis=1)]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    boxes = boxes.astype(np.float32)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    boxes = boxes[(w > 0) & (h > 0) & (w >= config.min_size) & (h >= config.min_size)]
    if len(boxes):
        _, first = np.unique(boxes, axis=0, return_index=True)
        boxes = boxes[np.sort(first)]
    if len(boxes) > config.max_proposals:
        if spread:  # an unranked grid: keep an evenly spread subset, not the first scales only
            keep = np.linspace(0, len(boxes) - 1, config.max_proposals).round().astype(np.int64)
            boxes = boxes[keep]
        else:
            boxes = boxes[: config.max_proposals]
    return np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)


def _grid_windows(
    width: int, height: int, scales: Sequence[float], aspect_ratios: Sequence[float], stride: float
) -> np.ndarray:
    """Dense windows, ``np.ndarray[N, 4]`` float64 xyxy, ordered by scale, then
    aspect ratio, then row, then column.

    A window of scale s and aspect ratio r (height / width) has side
    ``a = s * min(W, H)``, width ``min(a / sqrt(r), W)`` and height
    ``min(a * sqrt(r), H)``. Along x there are ``ceil((W - w) / (stride * w)) + 1``
    positions spread evenly over [0, W - w] (one when w = W), likewise along y.
    """
    short = float(min(width, height))
    out = []
    for scale in scales:
        side = scale * short
        for ratio in aspect_ratios:
            w = min(side / math.sqrt(ratio), float(width))
            h = min(side * math.sqrt(ratio), float(height))
            xs = _positions(float(width), w, stride)
            ys = _positions(float(height), h, stride)
            x1, y1 = np.meshgrid(xs, ys)  # rows of y, columns of x
            x1, y1 = x1.ravel(), y1.ravel()
            out.append(np.stack([x1, y1, x1 + w, y1 + h], axis=1))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 4))


def _positions(extent: float, size: float, stride: float) -> np.ndarray:
    room = extent - size
    if room <= 1e-9:
        return np.zeros(1)
    count = math.ceil(room / (stride * size) - 1e-9) + 1
    return np.linspace(0.0, room, count)


def _resized(image: np.ndarray, resize_to: int | None) -> tuple[np.ndarray, float, float]:
    """The image to search and the factors mapping its x and y back to the original."""
    height, width = image.shape[:2]
    if resize_to is None or min(height, width) == resize_to:
        return image, 1.0, 1.0
    cv2 = _cv2()
    scale = resize_to / min(height, width)
    new_w = max(1, int(round(width * scale)))
    new_h = max(1, int(round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    search = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return search, width / new_w, height / new_h


def _cv2():
    try:
        import cv2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "region proposals need OpenCV with the contrib modules: pip install opencv-contrib-python-headless"
        ) from error
    if not hasattr(cv2, "ximgproc"):  # pragma: no cover - depends on the environment
        raise ImportError(
            "this OpenCV build has no cv2.ximgproc (contrib modules); install opencv-contrib-python-headless "
            "instead of opencv-python"
        )
    return cv2


def _selective_search(rgb: np.ndarray, quality: bool) -> np.ndarray:
    _cv2()  # a clear error when OpenCV's contrib modules are missing
    return selective_search(np.ascontiguousarray(rgb[:, :, ::-1]), quality=quality)


# Structured edge detectors already loaded in this process, by model path.
_EDGE_DETECTORS: dict[str, object] = {}


def _edge_boxes(rgb: np.ndarray, config: ProposalConfig) -> np.ndarray:
    cv2 = _cv2()
    assert config.edge_model is not None  # checked in ProposalConfig.__post_init__
    model = str(config.edge_model)
    detector = _EDGE_DETECTORS.get(model)
    if detector is None:
        try:
            detector = cv2.ximgproc.createStructuredEdgeDetection(model)
        except cv2.error as error:
            raise ValueError(f"{model}: cannot load the structured edge model ({error})") from None
        _EDGE_DETECTORS[model] = detector
    edges = detector.detectEdges(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0)
    orientation = detector.computeOrientation(edges)
    edges = detector.edgesNms(edges, orientation)
    finder = cv2.ximgproc.createEdgeBoxes(
        alpha=float(config.edge_alpha),
        beta=float(config.edge_beta),
        # ask for some more than needed: small and duplicate boxes are dropped afterwards
        maxBoxes=int(config.max_proposals) * 2,
    )
    result = finder.getBoundingBoxes(edges, orientation)
    # OpenCV >= 4.5.x returns (boxes, scores); older versions return boxes only.
    if isinstance(result, tuple):
        result = result[0] if len(result) else ()
    return np.asarray(result, dtype=np.float64).reshape(-1, 4)


# ============================================================================ cache


class ProposalCache:
    """Proposals on disk: ``root/<method>-<key>/<safe image id>.npz``.

    Each file holds ``boxes`` (float32 [P, 4]), ``image_sha256`` (of the image
    file's bytes), ``config_key``, ``image_id`` and ``boxes_sha256`` (the
    checksum of the boxes' dtype, shape and bytes). Entries are written
    atomically (a temporary file in the same folder, then ``os.replace``), so a
    reader never sees half a file from a live writer; an entry that is
    truncated, corrupted (it fails its checksum), malformed, made for another
    image, image file or config, is reported as stale by :meth:`lookup` and
    recomputed by :func:`compute_proposals`. A full disk raises
    :class:`sppnet.atomic.DiskFullError` from :meth:`store` and leaves no
    partial entry.
    """

    def __init__(self, root: str | Path, config: ProposalConfig) -> None:
        self.root = Path(root)
        self.config = config
        self.config_key = config.key()
        self.folder = self.root / f"{config.method}-{self.config_key}"

    def path_for(self, image_id: str) -> Path:
        """The entry's file (it may not exist)."""
        return self.folder / f"{safe_file_name(image_id)}.npz"

    def lookup(self, image_id: str, image_sha256: str) -> tuple[np.ndarray | None, str | None]:
        """``(boxes, None)`` for a valid entry, ``(None, None)`` when there is
        none, ``(None, reason)`` when it is unreadable, corrupted or out of date."""
        path = self.path_for(image_id)
        if not path.exists():
            return None, None
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = sorted({"boxes", *_KEYS} - set(getattr(data, "files", ())))
                if missing:  # also an entry written before checksums existed
                    return None, f"cache entry {path} lacks {', '.join(missing)} (damaged or from an older sppnet)"
                boxes = np.array(data["boxes"])
                stored = {name: data[name] for name in _KEYS}
        except Exception as error:  # truncated, not a zip, bad CRC, missing arrays, object arrays...
            return None, f"unreadable cache entry {path} ({type(error).__name__}: {error})"
        if any(value.ndim != 0 or value.dtype.kind != "U" for value in stored.values()):
            return None, f"cache entry {path} is malformed (its keys are not strings)"
        stored_sha, stored_key, stored_id, stored_checksum = (str(value) for value in stored.values())
        if stored_key != self.config_key:
            return None, f"cache entry {path} was made with config {stored_key}, not {self.config_key}"
        if stored_id != image_id:
            return None, f"cache entry {path} belongs to image id {stored_id!r}"
        if stored_sha != image_sha256:
            return None, f"the image file changed since cache entry {path} was written"
        if stored_checksum != _boxes_sha256(boxes):
            return None, f"cache entry {path} is corrupted (its boxes do not match the checksum)"
        if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            return None, f"cache entry {path} holds malformed boxes (shape {boxes.shape}, dtype {boxes.dtype})"
        return boxes, None

    def store(self, image_id: str, boxes: np.ndarray, image_sha256: str) -> Path:
        """Write one entry atomically; returns its path. A full disk raises
        :class:`sppnet.atomic.DiskFullError` (an ``OSError``) naming the file."""
        boxes = np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)
        path = self.path_for(image_id)
        arrays = dict(
            boxes=boxes,
            image_sha256=np.array(image_sha256),
            config_key=np.array(self.config_key),
            image_id=np.array(image_id),
            boxes_sha256=np.array(_boxes_sha256(boxes)),
        )

        def write(temp: str) -> None:
            with open(temp, "wb") as out:  # a file object: np.savez would add ".npz" to a name
                np.savez(out, **arrays)

        # not fsynced: a lost or damaged entry fails its checksum and is recomputed
        atomic_replace(path, write, durable=False)
        return path


# The string arrays of a proposal cache entry, beside "boxes".
_KEYS = ("image_sha256", "config_key", "image_id", "boxes_sha256")


def _boxes_sha256(boxes: np.ndarray) -> str:
    """SHA-256 of the boxes' dtype, shape and bytes (a cache entry's checksum)."""
    boxes = np.ascontiguousarray(boxes)
    digest = hashlib.sha256(f"{boxes.dtype.str}{boxes.shape}".encode())
    digest.update(boxes.tobytes())
    return digest.hexdigest()


def safe_file_name(image_id: str) -> str:
    """A file name for ``image_id``: itself when it is already plain and short,
    else its plain characters plus a hash of the whole id (so ``a/b`` and
    ``a_b`` never share a file)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).lstrip(".")[:100]
    if safe != image_id or not safe:
        digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = f"{safe or 'image'}-{digest}"
    return safe


# ============================================================================ batch run


@dataclass
class ProposalRun:
    """The result of :func:`compute_proposals`.

    boxes: ``Tensor[P, 4]`` float32 per image id, in the order of the records.
    skipped: images that got no proposals, with the reason.
    computed: images whose proposals were computed in this run (including the
    ``recomputed_stale`` ones); reused: images read from the cache;
    recomputed_stale: images whose cache entry was unreadable or out of date.
    seconds: wall-clock time of the run.
    """

    boxes: dict[str, Tensor] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    recomputed_stale: int = 0
    seconds: float = 0.0


def _init_worker() -> None:
    try:
        _cv2().setNumThreads(1)
    except ImportError:  # pragma: no cover - reported by the task itself
        pass
    torch.set_num_threads(1)


def _compute_one(
    image_id: str, image_path: str, image_sha256: str, config: ProposalConfig, cache_root: str
) -> tuple[str, np.ndarray | None, str | None, str | None]:
    """Load, propose, store. Returns ``(image_id, boxes, error, cache_warning)``;
    a failure of this image is returned, not raised."""
    try:
        image = load_image(image_path)
        boxes = _propose_array(image, config)
        del image
    except Exception as error:  # one bad image must not end the run
        reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        return image_id, None, reason, None
    try:
        ProposalCache(cache_root, config).store(image_id, boxes, image_sha256)
    except Exception as error:  # the boxes are still good; say the cache could not keep them
        return image_id, boxes, None, f"cannot write the proposal cache for {image_path}: {error}"
    return image_id, boxes, None, None


def compute_proposals(
    records: Sequence[ImageRecord],
    config: ProposalConfig,
    cache_root: str | Path,
    workers: int = 1,
    progress: bool = True,
) -> ProposalRun:
    """Proposals for every record, from the cache when it holds a valid entry.

    Images are loaded one at a time (in each worker) and dropped after use;
    only the boxes are kept. ``workers > 1`` computes in that many processes
    (``spawn`` start method: forking a process that runs torch can deadlock).
    A failing image (unreadable file, decode error, ...) is listed in
    ``skipped`` with its path and reason; the run goes on.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    start = time.perf_counter()
    cache = ProposalCache(cache_root, config)
    run = ProposalRun()
    found: dict[str, Tensor] = {}
    order: list[str] = []
    seen: dict[str, Path] = {}
    todo: list[tuple[str, str, str, bool]] = []  # (image_id, path, sha256, stale)

    bar = _progress_bar(len(records), f"proposals {config.method}", progress)
    try:
        for record in records:
            image_id, path = record.image_id, Path(record.image_path)
            if image_id in seen:
                if seen[image_id] != path:
                    run.skipped.append(Skipped(path, f"image id {image_id!r} is already used by {seen[image_id]}"))
                bar.update(1)
                continue
            seen[image_id] = path
            order.append(image_id)
            try:
                sha = _sha256_uncached(path)
            except OSError as error:
                if isinstance(error, FileNotFoundError):
                    reason = "image file not found"
                else:
                    reason = f"cannot read image file ({error})"
                run.skipped.append(Skipped(path, reason))
                bar.update(1)
                continue
            cached, stale = cache.lookup(image_id, sha)
            if cached is not None:
                found[image_id] = torch.from_numpy(cached)
                run.reused += 1
                bar.update(1)
            else:
                todo.append((image_id, str(path), sha, stale is not None))

        paths = {item[0]: item[1] for item in todo}
        stale_ids = {item[0] for item in todo if item[3]}

        def collect(image_id: str, boxes: np.ndarray | None, error: str | None, cache_warning: str | None) -> None:
            if boxes is None:
                run.skipped.append(Skipped(Path(paths[image_id]), error or "no proposals"))
            else:
                found[image_id] = torch.from_numpy(boxes)
                run.computed += 1
                run.recomputed_stale += image_id in stale_ids
            if cache_warning:
                warnings.warn(cache_warning, RuntimeWarning, stacklevel=3)
            bar.update(1)

        if workers > 1 and len(todo) > 1:
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(
                max_workers=min(workers, len(todo)), mp_context=context, initializer=_init_worker
            )
            try:
                futures = {
                    pool.submit(_compute_one, image_id, path, sha, config, str(cache_root)): image_id
                    for image_id, path, sha, _ in todo
                }
                for future in as_completed(futures):
                    try:
                        collect(*future.result())
                    except Exception as error:  # e.g. BrokenProcessPool: a worker died
                        collect(futures[future], None, f"worker failed: {type(error).__name__}: {error}", None)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for image_id, path, sha, _ in todo:
                collect(*_compute_one(image_id, path, sha, config, str(cache_root)))
    finally:
        bar.close()

    run.boxes = {image_id: found[image_id] for image_id in order if image_id in found}
    run.seconds = time.perf_counter() - start
    return run


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, description: str, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return _NoBar()
    # disable=None: tqdm turns itself off when stderr is not a terminal
    return tqdm(total=total, desc=description, unit="image", disable=None)


# ============================================================================ recall


def proposal_recall(
    proposals: dict[str, Tensor],
    records: Sequence[ImageRecord],
    iou_thresholds: Sequence[float] = (0.5, 0.7),
) -> dict[float, float]:
    """Fraction of non-difficult ground-truth boxes whose best IoU with a
    proposal of the same image is >= t, for each threshold t.

    An image without an entry in ``proposals`` (e.g. skipped) recalls none of
    its boxes. Returns NaN for every threshold when there is no non-difficult
    ground truth at all.
    """
    best: list[Tensor] = []
    for record in records:
        gt = torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
        difficult = torch.as_tensor(record.difficult, dtype=torch.bool).reshape(-1)
        if difficult.numel() == gt.shape[0]:
            gt = gt[~difficult]
        if gt.shape[0] == 0:
            continue
        boxes = proposals.get(record.image_id)
        if boxes is None or boxes.numel() == 0:
            best.append(torch.zeros(gt.shape[0]))
            continue
        ious = box_iou(gt, boxes.to(torch.float32).reshape(-1, 4).cpu())
        best.append(ious.max(dim=1).values)
    if not best:
        return {float(t): float("nan") for t in iou_thresholds}
    all_best = torch.cat(best)
    return {float(t): float((all_best >= t).double().mean()) for t in iou_thresholds}
