"""Proposals for many images: computed in worker processes or read from the
cache, then handed to the pipelines a chunk at a time."""

from __future__ import annotations

import multiprocessing
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from sppnet.ops.boxes import box_iou

from sppnet.data.images import load_image
from sppnet.data.records import ImageRecord, Skipped
from sppnet.hashing import file_sha256, file_sha256_uncached
from sppnet.proposals.cache import ProposalCache
from sppnet.proposals.config import ProposalConfig
from sppnet.proposals.methods import _cv2, _propose_array

__all__ = ["ProposalRun", "compute_proposals", "CachedProposals", "stream_proposals", "proposal_recall"]


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
                sha = file_sha256_uncached(path)
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


# ============================================================================ a dataset's proposals


# Images per compute_proposals call in stream_proposals: only one chunk's boxes
# are in memory at a time (256 x 2000 boxes: 8 MB), and with workers each chunk
# starts its own pool (~2 s of imports), a small share of 256 images' search.
_PROPOSAL_CHUNK = 256


class CachedProposals(Mapping[str, torch.Tensor]):
    """Proposals by image id, read from the proposal cache on each access
    (what the engine's ``dataset_proposals`` returns): a read-only mapping that holds
    one record per image, never the boxes, so its memory does not grow with
    the boxes' count. Keys are the ids that got proposals, in the dataset's
    order; a value is ``Tensor[P, 4]`` float32, the boxes the cache holds for
    the image file as it is now (an entry missing or stale at access time, e.g.
    when the cache folder could not be written, is computed again)."""

    def __init__(self, records: dict[str, ImageRecord], config: ProposalConfig, cache_root: Path) -> None:
        self._records = records
        self._config = config
        self._cache_root = Path(cache_root)
        self._cache = ProposalCache(cache_root, config)

    def __getitem__(self, image_id: str) -> torch.Tensor:
        record = self._records[image_id]
        try:
            boxes, _ = self._cache.lookup(image_id, file_sha256(record.image_path))
        except OSError:
            boxes = None
        if boxes is not None:
            return torch.from_numpy(boxes)
        run = compute_proposals([record], self._config, self._cache_root, progress=False)
        if image_id not in run.boxes:
            reasons = "; ".join(str(item) for item in run.skipped) or "none were found"
            raise KeyError(f"no proposals for image {image_id!r}: {reasons}")
        return run.boxes[image_id]

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._records

    def __iter__(self):
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"CachedProposals({len(self)} images, {self._cache.folder})"


def stream_proposals(records: Sequence[ImageRecord], config: ProposalConfig, cache: Path,
                     workers: int = 1) -> tuple[ProposalRun, dict]:
    """``compute_proposals`` over ``records`` in chunks (``workers`` processes
    for each chunk's uncached images), keeping the counts, the skipped images
    and the record of each image that got proposals, not the boxes. Ids are
    checked across chunks as compute_proposals checks them within one call: an
    id seen before with another file is skipped, a repeat of the same file is
    computed once."""
    total, kept, paths, unique = ProposalRun(), {}, {}, []
    for record in records:
        path = Path(record.image_path)
        if record.image_id in paths:
            if paths[record.image_id] != path:
                total.skipped.append(Skipped(path, f"image id {record.image_id!r} is already used by "
                                                   f"{paths[record.image_id]}"))
            continue
        paths[record.image_id] = path
        unique.append(record)
    for start in range(0, len(unique), _PROPOSAL_CHUNK):
        chunk = unique[start:start + _PROPOSAL_CHUNK]
        run = compute_proposals(chunk, config, cache, workers=workers, progress=False)
        total.skipped.extend(run.skipped)
        total.computed += run.computed
        total.reused += run.reused
        total.recomputed_stale += run.recomputed_stale
        kept.update((record.image_id, record) for record in chunk if record.image_id in run.boxes)
        del run
    return total, kept


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
