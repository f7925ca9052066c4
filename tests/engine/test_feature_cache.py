import errno
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.atomic import DiskFullError
from sppnet.data.records import ImageRecord
from sppnet.data.transforms import scale_image, to_tensor
from sppnet.engine.feature_cache import FeatureCache, MapsInMemory, trunk_key
from sppnet.models.backbones import ZF5
from tests.faults import file_size_limit


def make_records(root, count=3):
    records = []
    rng = np.random.default_rng(0)
    for i in range(count):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(f"img/{i}", path, 80, 60 + 10 * i))
    return records


@pytest.fixture
def trunk():
    torch.manual_seed(0)
    return ZF5(width=0.125).eval()


def test_round_trip_is_exact_and_reused(tmp_path, trunk):
    records = make_records(tmp_path)
    cache = FeatureCache(tmp_path / "cache", trunk, scales=(64, 96), flips=True)
    run = cache.fill(records, progress=False)
    assert (run.computed, run.reused) == (3, 0)
    assert cache.fill(records, progress=False).reused == 3
    for record in records:
        image = to_tensor(np.array(Image.open(record.image_path)))
        for flipped in (False, True):
            maps = cache.load(record, flipped=flipped)
            for scale in (64, 96):
                scaled, factor = scale_image(image.flip(-1) if flipped else image, scale)
                with torch.no_grad():
                    expected = trunk(scaled[None])[0].half()
                assert torch.equal(maps[scale].features, expected) and maps[scale].factor == factor


def test_maps_in_memory_pool_as_the_cache_does_and_stay_in_budget(tmp_path, trunk):
    from sppnet.models.windows import pool_windows

    records = make_records(tmp_path)
    cache = FeatureCache(tmp_path / "cache", trunk, scales=(64, 96), flips=True)
    cache.fill(records, progress=False)
    one_image = sum(4 * m.features.numel() for m in cache.load(records[2]).values())  # the largest image
    memory = MapsInMemory(cache, budget=2 * one_image)
    boxes = torch.tensor([[0.0, 0.0, 79.0, 59.0], [10.0, 5.0, 30.0, 40.0], [50.0, 20.0, 52.0, 22.0]])
    for _ in range(2):
        for record in records:
            for flipped in (False, True):
                kept = memory.load(record, flipped)
                assert memory.load(record, flipped) is kept  # the second load reads nothing
                stored = cache.load(record, flipped)
                for scale, cached in stored.items():
                    assert kept[scale].features.dtype == torch.float32
                    assert torch.equal(kept[scale].features, cached.features.float())
                    assert kept[scale].features.permute(1, 2, 0).is_contiguous()  # the pooling kernel's layout
                    assert kept[scale].factor == cached.factor
                options = dict(target=48.0, flipped=flipped, image_width=record.width)
                assert torch.equal(pool_windows(kept, boxes, trunk.geometry, (3, 2, 1), **options),
                                   pool_windows(stored, boxes, trunk.geometry, (3, 2, 1), **options))
                assert memory.size <= 2 * one_image and len(memory._kept) <= 2


def test_corrupt_and_stale_entries_are_recomputed(tmp_path, trunk):
    records = make_records(tmp_path, 2)
    cache = FeatureCache(tmp_path / "cache", trunk, scales=(64,))
    cache.fill(records, progress=False)
    entry = cache.path(records[0].image_id, 64)
    entry.write_bytes(entry.read_bytes()[:50])  # truncated
    Image.fromarray(np.zeros((70, 80, 3), np.uint8)).save(records[1].image_path)  # the image changed
    run = cache.fill(records, progress=False)
    assert (run.computed, run.recomputed, run.reused) == (2, 2, 0)
    assert cache.fill(records, progress=False).reused == 2


def test_shards_split_the_images_and_other_trunks_get_their_own_folder(tmp_path, trunk):
    records = make_records(tmp_path, 3)
    cache = FeatureCache(tmp_path / "cache", trunk, scales=(64,))
    assert cache.fill(records, shard=(0, 2), progress=False).computed == 2
    assert cache.fill(records, shard=(1, 2), progress=False).computed == 1
    assert cache.fill(records, progress=False).reused == 3
    torch.manual_seed(1)
    other = FeatureCache(tmp_path / "cache", ZF5(width=0.125), scales=(64,))
    assert other.folder != cache.folder
    with pytest.raises(ValueError, match="shard"):
        cache.fill(records, shard=(2, 2))


def test_unreadable_images_are_reported(tmp_path, trunk):
    records = make_records(tmp_path, 2)
    records[0].image_path.write_bytes(b"not an image")
    run = FeatureCache(tmp_path / "cache", trunk, scales=(64,)).fill(records, progress=False)
    assert run.computed == 1 and len(run.skipped) == 1 and "img0.png" in str(run.skipped[0])


# ----------------------------------------------------------------------------- faults


def flip_middle_data_byte(entry):
    """Flip one byte in the middle of the tensor data of a safetensors file
    (after its 8-byte length and JSON header): the file still parses."""
    data = bytearray(entry.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start + (len(data) - start) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))


def assert_equals_fresh(cache, record):
    fresh = cache.compute(record)
    for flipped in cache.variants:
        maps = cache.load(record, flipped=flipped)
        for scale in cache.scales:
            assert torch.equal(maps[scale].features, fresh[scale, flipped].features)
            assert maps[scale].factor == fresh[scale, flipped].factor


@pytest.mark.parametrize("fault", ["truncated", "flipped-byte", "other-image", "other-trunk", "mirror-swapped"])
def test_damaged_or_foreign_entries_are_detected_and_recomputed(tmp_path, trunk, fault):
    records = make_records(tmp_path, 2)
    cache = FeatureCache(tmp_path / "cache", trunk, scales=(64,), flips=True)
    cache.fill(records, progress=False)
    entry = cache.path(records[0].image_id, 64)
    if fault == "truncated":
        entry.write_bytes(entry.read_bytes()[:-7])
    elif fault == "flipped-byte":
        flip_middle_data_byte(entry)
    elif fault == "other-image":
        entry.write_bytes(cache.path(records[1].image_id, 64).read_bytes())
    elif fault == "other-trunk":
        torch.manual_seed(1)
        other = FeatureCache(tmp_path / "other", ZF5(width=0.125).eval(), scales=(64,), flips=True)
        other.fill(records[:1], progress=False)
        entry.write_bytes(other.path(records[0].image_id, 64).read_bytes())
    else:  # the mirrored map in place of the plain one: same image, scale and trunk
        entry.write_bytes(cache.path(records[0].image_id, 64, flipped=True).read_bytes())
    damaged = entry.read_bytes()
    run = cache.fill(records, progress=False)
    assert (run.computed, run.recomputed, run.reused, run.skipped) == (1, 1, 1, [])
    assert entry.read_bytes() != damaged
    assert_equals_fresh(cache, records[0])
    assert cache.fill(records, progress=False).reused == 2


def test_load_recomputes_a_corrupted_entry(tmp_path, trunk):
    records = make_records(tmp_path, 1)
    cache = FeatureCache(tmp_path / "cache", trunk, scales=(64, 96))
    cache.fill(records, progress=False)
    flip_middle_data_byte(cache.path(records[0].image_id, 96))
    assert "corrupted" in cache._read(cache.path(records[0].image_id, 96), records[0].image_id,
                                      cache._image_sha(records[0].image_path), 96, False)
    assert_equals_fresh(cache, records[0])  # load() found the damage and wrote a good entry
    assert cache.fill(records, progress=False).reused == 1


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_full_disk_is_a_clear_error_and_leaves_no_partial_entry(tmp_path, trunk):
    records = make_records(tmp_path, 2)
    cache = FeatureCache(tmp_path / "cache", trunk, scales=(128,))
    cache.fill(records[:1], progress=False)
    old_entry = cache.path(records[0].image_id, 128)
    old_bytes = old_entry.read_bytes()
    assert len(old_bytes) > 2048
    Image.fromarray(np.full((60, 80, 3), 7, np.uint8)).save(records[0].image_path)  # the entry is now stale
    with file_size_limit(2048), pytest.raises(DiskFullError) as caught:
        cache.fill(records, progress=False)  # not a skipped image: the run stops
    message = str(caught.value)
    assert caught.value.errno == errno.EFBIG and "file size limit" in message
    assert f"cannot write {old_entry}:" in message  # the first image of the run, the stale one
    assert old_entry.read_bytes() == old_bytes  # the older entry is untouched
    leftovers = [p for p in cache.folder.rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    assert leftovers == [] and len(list(cache.folder.rglob("*.safetensors"))) == 1
    with file_size_limit(2048), pytest.raises(DiskFullError, match="file size limit"):
        cache.load(records[1])
    run = cache.fill(records, progress=False)  # room again: both are (re)computed
    assert (run.computed, run.recomputed) == (2, 1)
    assert_equals_fresh(cache, records[0])


def test_trunk_key_covers_batch_norm_trunks():
    # zf5-bn (and the torchvision trunks) hold 0-dim num_batches_tracked buffers.
    from sppnet.models.backbones.registry import build_backbone

    torch.manual_seed(0)
    trunk = build_backbone("zf5-bn", 0.125)
    key = trunk_key(trunk)
    assert key == trunk_key(trunk)
    trunk.features[1].running_mean += 1  # statistics change the maps, so they change the key
    assert trunk_key(trunk) != key
