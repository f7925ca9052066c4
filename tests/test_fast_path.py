import pytest

from sppnet import fast_path
from sppnet.fast_path import training_precision


@pytest.mark.parametrize("flags, expected", [
    ({"avx512f", "avx512_bf16"}, "bf16"),
    ({"avx512f", "amx_bf16", "amx_tile"}, "bf16"),
    ({"avx2", "avx512f"}, "fp32"),  # oneDNN would emulate bf16, slower than float32
    (set(), "fp32"),
])
def test_bf16_training_needs_bfloat16_instructions(monkeypatch, flags, expected):
    monkeypatch.setattr(fast_path, "cpu_flags", lambda: ("some CPU", frozenset(flags)))
    messages = []
    assert training_precision("bf16", messages.append) == expected
    assert (expected == "fp32") == any("training in float32" in m for m in messages)
    assert training_precision("fp32", messages.append) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        training_precision("fp16")
