"""The SPP-net feature cache: conv5 maps of every image at every scale,
computed once and pooled by every later stage (SPEC section 3).

Layout: ``ROOT/<trunk key>/<image id>/s<scale>.safetensors`` (``s<scale>f``
for the mirrored image, cached too when ``flips``), one file per image, scale
and mirroring, holding the map as float16 ``(C, h, w)`` and, in its
metadata, the image file's SHA-256, the image id, the scale, the mirroring,
the resize factor, the trunk key (a hash of the trunk's weights and the
normalisation) and the SHA-256 of the map's bytes. Entries are written
atomically; an entry that is truncated, unreadable, corrupted (its bytes no
longer match the checksum) or made for another image file, image, scale,
mirroring or trunk is recomputed. A full disk raises
:class:`sppnet.atomic.DiskFullError` and leaves no partial entry.
``shard=(i, n)`` makes a process handle images i, i+n, ... so several
processes can fill one cache.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from sppnet.data.images import ImageError, load_image
from sppnet.hashing import file_sha256
from sppnet.proposals import safe_file_name
from sppnet.data.records import ImageRecord, Skipped
from sppnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from sppnet.atomic import DiskFullError, atomic_replace
from sppnet.fast_path import prepare
from sppnet.models.windows import CachedMap, image_maps

_HASHES_KEPT = 20_000  # image hashes remembered (~0.5 KiB each)

__all__ = ["trunk_key", "FeatureCache", "CacheRun", "MapsInMemory", "map_sha256"]


def trunk_key(trunk: torch.nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> str:
    """A short hash of everything that changes the maps: weights and normalisation."""
    digest = hashlib.sha256(repr((type(trunk).__name__, tuple(mean), tuple(std))).encode())
    for name, tensor in trunk.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def map_sha256(features: torch.Tensor) -> str:
    """SHA-256 of a cached map's dtype, shape and bytes (the entry's checksum)."""
    features = features.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{features.dtype}{tuple(features.shape)}".encode())
    digest.update(features.view(torch.uint8).numpy())
    return digest.hexdigest()


@dataclass
class CacheRun:
    computed: int = 0
    reused: int = 0
    recomputed: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0


class FeatureCache:
    def __init__(
        self, root: str | Path, trunk: torch.nn.Module, scales: Sequence[int], max_side: int | None = None, flips: bool = False
    ) -> None:
        if not scales or any(s < 16 for s in scales):
            raise ValueError(f"scales must be a non-empty list of sides >= 16, got {scales}")
        self.trunk = trunk
        self.scales = tuple(int(s) for s in scales)
        self.max_side = max_side
        self.variants = (False, True) if flips else (False,)
        self.key = trunk_key(trunk)
        self.folder = Path(root) / self.key
        # Bounded (least recently used out): memory must not grow with the dataset.
        self._hashes: OrderedDict[tuple[Path, int, int], str] = OrderedDict()

    def _image_sha(self, path: Path) -> str:
        """The image file's SHA-256, hashed once per file version: fine-tuning
        loads the same images thousands of times."""
        stat = Path(path).stat()
        key = (Path(path), stat.st_mtime_ns, stat.st_size)
        if key in self._hashes:
            self._hashes.move_to_end(key)
        else:
            self._hashes[key] = file_sha256(path)
            if len(self._hashes) > _HASHES_KEPT:
                self._hashes.popitem(last=False)
        return self._hashes[key]

    def path(self, image_id: str, scale: int, flipped: bool = False) -> Path:
        return self.folder / safe_file_name(image_id) / f"s{scale}{'f' if flipped else ''}.safetensors"

    def _read(self, path: Path, image_id: str, sha: str, scale: int, flipped: bool) -> CachedMap | str | None:
        """The entry at ``path``; None when there is none, a reason (str) when
        it cannot be used."""
        if not path.is_file():
            return None
        try:
            with safe_open(path, framework="pt") as handle:
                meta = handle.metadata() or {}
                features = handle.get_tensor("map")
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            return f"unreadable cache entry {path} ({error})"
        if "map_sha256" not in meta or "flipped" not in meta:
            return f"cache entry {path} has no checksum (damaged or from an older sppnet)"
        if (meta.get("image_sha256") != sha or meta.get("image_id") != image_id or meta.get("trunk") != self.key
                or meta.get("scale") != str(scale) or meta.get("flipped") != str(int(flipped))):
            return f"cache entry {path} was made for another image file, scale, mirroring or trunk"
        try:
            factor = float(meta.get("factor", "nan"))
        except ValueError:
            factor = float("nan")
        if features.dtype != torch.float16 or features.ndim != 3 or not (0 < factor < float("inf")):
            return f"cache entry {path} is malformed (dtype {features.dtype}, shape {tuple(features.shape)})"
        if meta.get("map_sha256") != map_sha256(features):
            return f"cache entry {path} is corrupted (its bytes do not match the checksum)"
        return CachedMap(features, scale, factor)

    @torch.no_grad()
    def compute(self, record: ImageRecord, variants: Sequence[bool] | None = None,
                precision: str = "fp32") -> dict[tuple[int, bool], CachedMap]:
        """The maps of one image, computed now and not stored: ``(scale,
        flipped) -> map`` for each mirroring in ``variants`` (default: the
        cache's). ``precision="bf16"`` is the CPU fast path (for timing and
        testing; the cache itself always holds fp32 results)."""
        image = to_tensor(load_image(record.image_path))
        self.trunk.eval()
        prepare(self.trunk, precision)
        try:
            return self.compute_image(image, variants, precision)
        finally:
            prepare(self.trunk, "fp32")

    @torch.no_grad()
    def compute_image(self, image: torch.Tensor, variants: Sequence[bool] | None = None,
                      precision: str = "fp32") -> dict[tuple[int, bool], CachedMap]:
        """``compute`` on an image already decoded and normalised
        (``to_tensor``), with the trunk as it is: the caller has put it in
        eval mode and in ``precision``'s memory format (``prepare``). For
        ``sppnet bench detect``, which times the convs without file decoding
        or weight-format switches."""
        maps = {}
        for flipped in self.variants if variants is None else variants:
            source = image.flip(-1) if flipped else image
            for scale, cached in image_maps(self.trunk, source, self.scales, self.max_side, precision).items():
                maps[scale, flipped] = cached
        return maps

    def _write(self, record: ImageRecord, sha: str, maps: dict[tuple[int, bool], CachedMap]) -> None:
        for (scale, flipped), cached in maps.items():
            meta = {"image_sha256": sha, "trunk": self.key, "scale": str(scale), "factor": repr(cached.factor),
                    "image_id": record.image_id, "flipped": str(int(flipped)),
                    "map_sha256": map_sha256(cached.features)}
            path = self.path(record.image_id, scale, flipped)
            # not fsynced: a lost or damaged entry fails its checksum and is recomputed
            atomic_replace(path, lambda temp: save_file({"map": cached.features}, temp, metadata=meta), durable=False)

    def _lookup(self, record: ImageRecord, sha: str) -> dict:
        return {(s, f): self._read(self.path(record.image_id, s, f), record.image_id, sha, s, f)
                for f in self.variants for s in self.scales}

    def load(self, record: ImageRecord, flipped: bool = False) -> dict[int, CachedMap]:
        """scale -> map of one image (or its mirror), from the cache or computed
        and stored. Raises ``ImageError`` for an unreadable image."""
        if flipped not in self.variants:
            raise ValueError("this cache was made without mirrored maps (flips=False)")
        sha = self._image_sha(record.image_path)
        found = self._lookup(record, sha)
        if not all(isinstance(v, CachedMap) for v in found.values()):
            found = self.compute(record)
            self._write(record, sha, found)
        return {s: found[s, flipped] for s in self.scales}

    def fill(self, records: Sequence[ImageRecord], shard: tuple[int, int] = (0, 1), progress: bool = True) -> CacheRun:
        """Make sure every image of this shard has its maps cached."""
        from tqdm import tqdm

        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
        run = CacheRun()
        started = time.perf_counter()
        for record in tqdm(records[index::count], desc="conv features", disable=None if progress else True, leave=False):
            try:
                sha = self._image_sha(record.image_path)
                found = list(self._lookup(record, sha).values())
                if all(isinstance(v, CachedMap) for v in found):
                    run.reused += 1
                    continue
                run.recomputed += any(isinstance(v, str) for v in found)
                self._write(record, sha, self.compute(record))
                run.computed += 1
            except DiskFullError:
                raise  # every later image would fail the same way
            except (ImageError, OSError) as error:
                run.skipped.append(Skipped(record.image_path, str(error)))
        run.seconds = time.perf_counter() - started
        return run


class MapsInMemory:
    """``FeatureCache.load`` for a loop that draws the same images again and
    again (fine-tuning: thousands of iterations over a few hundred images):
    each image's maps are read and verified once and kept decoded, float32
    in channels-last layout (the pooling kernel's, so pooling copies
    nothing); the least recently used go beyond ``budget`` bytes. Pooling
    them gives the same values as pooling the cache's float16 maps (the
    conversion is exact). Profiled on the demo's fine-tuning, reading,
    verifying and converting the maps took 61% of the time."""

    def __init__(self, cache: FeatureCache, budget: int = 1 << 30) -> None:
        self.cache, self.budget, self.size = cache, budget, 0
        self._kept: OrderedDict[tuple[str, bool], tuple[dict[int, CachedMap], int]] = OrderedDict()

    def load(self, record: ImageRecord, flipped: bool = False) -> dict[int, CachedMap]:
        key = (record.image_id, flipped)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key][0]
        maps = {scale: CachedMap(_channels_last_float(cached.features), cached.scale, cached.factor)
                for scale, cached in self.cache.load(record, flipped).items()}
        size = sum(m.features.numel() * m.features.element_size() for m in maps.values())
        self._kept[key] = maps, size
        self.size += size
        while self.size > self.budget and len(self._kept) > 1:
            _, (_, dropped) = self._kept.popitem(last=False)
            self.size -= dropped
        return maps


def _channels_last_float(features: torch.Tensor) -> torch.Tensor:
    """A float32 copy of a ``(C, h, w)`` map stored as ``(h, w, C)``, viewed as ``(C, h, w)``."""
    return features.permute(1, 2, 0).float().contiguous().permute(2, 0, 1)
