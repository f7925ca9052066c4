"""Importing sppnet gives oneDNN a primitive cache for every image size,
unless the environment chose one (sppnet.kernel_cache).

oneDNN reads the variable when it creates its first primitive, so what is
checked is what a fresh process sees right after ``import sppnet``.
"""

from __future__ import annotations

import os
import subprocess
import sys

from sppnet.kernel_cache import CAPACITY

_PROGRAM = "import os, sppnet; print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'))"


def _capacity_after_import(environment_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if environment_value is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = environment_value
    return subprocess.run([sys.executable, "-c", _PROGRAM], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_sppnet_asks_onednn_for_room_for_every_image_size():
    assert _capacity_after_import(None) == str(CAPACITY) == "65536"


def test_the_environment_keeps_its_own_capacity():
    assert _capacity_after_import("1024") == "1024"
