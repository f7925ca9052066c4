"""engine.memory_cache: values are the loaded ones, kept within their byte
budget, least recently used dropped first."""

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.data.images import load_image
from sppnet.data.transforms import to_tensor
from sppnet.engine.memory_cache import MemoryCache


def test_decoded_images_are_the_loaded_ones_and_stay_within_their_bytes(tmp_path):
    paths = []
    for k, (height, width) in enumerate([(20, 30), (20, 30), (20, 30), (60, 90)]):
        path = tmp_path / f"{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    loads = []

    def decode(path):
        loads.append(path)
        return to_tensor(load_image(path))

    one = 3 * 20 * 30 * 4  # bytes of one small normalised image
    decoded = MemoryCache(decode, max_bytes=2 * one)
    for path in paths[:3] + paths[1:3]:
        assert torch.equal(decoded(path), to_tensor(load_image(path)))
    assert loads == paths[:3]  # the last two reads came from memory
    assert list(decoded.kept) == [paths[1], paths[2]] and decoded.bytes == 2 * one
    decoded(paths[1])  # used last: the other is dropped first
    decoded(paths[0])
    assert list(decoded.kept) == [paths[1], paths[0]]
    # An image larger than the whole budget is decoded, not kept, and keeps nothing else out.
    assert torch.equal(decoded(paths[3]), to_tensor(load_image(paths[3])))
    assert list(decoded.kept) == [paths[1], paths[0]] and decoded.bytes == 2 * one


def test_a_failed_load_keeps_nothing_and_fails_again():
    calls = []

    def load(key):
        calls.append(key)
        if key == "bad":
            raise OSError("unreadable")
        return torch.zeros(4)

    cache = MemoryCache(load, max_bytes=1 << 10)
    for _ in range(2):
        with pytest.raises(OSError, match="unreadable"):
            cache("bad")
    assert calls == ["bad", "bad"] and not cache.kept and cache.bytes == 0
    assert torch.equal(cache("good"), torch.zeros(4)) and list(cache.kept) == ["good"]


@pytest.mark.parametrize("max_bytes", [-1, 1.5, True])
def test_budget_must_be_a_whole_number_of_bytes(max_bytes):
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryCache(lambda key: torch.zeros(1), max_bytes)
