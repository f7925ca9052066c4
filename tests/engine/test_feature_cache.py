import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.data.records import ImageRecord
from sppnet.data.transforms import scale_image, to_tensor
from sppnet.engine.feature_cache import FeatureCache
from sppnet.models.backbones import ZF5


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
