"""Proposals on disk, one checked ``.npz`` per image."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from sppnet.atomic import atomic_replace
from sppnet.proposals.config import ProposalConfig

__all__ = ["ProposalCache", "safe_file_name"]


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
