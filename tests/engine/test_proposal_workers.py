"""How many processes compute a dataset's proposals (engine.detection_stages.proposal_workers)."""

from __future__ import annotations

import pytest
import torch

from sppnet.engine import detection_stages
from sppnet.engine.detection_stages import proposal_workers


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_as_many_workers_as_torch_threads_for_a_real_dataset(threads):
    threads(2)
    assert proposal_workers(300) == 2
    threads(1)  # the test suite's budget: no pool
    assert proposal_workers(300) == 1


def test_small_datasets_and_many_cores(threads):
    threads(2)
    assert proposal_workers(31) == 1  # a pool's start costs more than 31 images' search
    assert proposal_workers(32) == 2
    threads(16)
    assert proposal_workers(10_000) == 8  # each worker imports torch


def test_one_worker_per_rank_in_a_process_group(threads, monkeypatch):
    threads(2)
    monkeypatch.setattr(detection_stages.distributed, "world", lambda: 2)
    assert proposal_workers(300) == 1
