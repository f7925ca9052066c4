from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from sppnet.config import ConfigError, from_dict, load_config, to_dict


@dataclass(frozen=True)
class Inner:
    levels: tuple[int, ...] = (6, 3, 2, 1)
    mode: Literal["max", "avg"] = "max"
    lr: float = 0.01


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    weights: Path | None = None
    flag: bool = False


def test_round_trip_and_conversions():
    config = from_dict(Outer, {"name": "x", "inner": {"levels": [4, 2], "lr": 1}, "weights": "w.safetensors"})
    assert config == Outer("x", Inner((4, 2), "max", 1.0), Path("w.safetensors"))
    assert from_dict(Outer, to_dict(config)) == config


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "inner": {"lvls": [1]}}, "unknown config key 'inner.lvls'"),
    ({"name": "x", "extra": 1}, "unknown config key 'extra'"),
    ({}, "missing required config key 'name'"),
    ({"name": 3}, "name: expected a string"),
    ({"name": "x", "inner": {"levels": [1, "2"]}}, r"inner.levels\[1\]: expected an integer"),
    ({"name": "x", "inner": {"mode": "median"}}, "inner.mode: must be one of"),
    ({"name": "x", "flag": "yes"}, "flag: expected true or false"),
    ({"name": "x", "inner": {"lr": True}}, "inner.lr: expected a number"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_load_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ninner:\n  lr: 0.5\n")
    config = load_config(Outer, path, ["inner.levels=[3, 1]", "flag=true"])
    assert config.inner == Inner((3, 1), "max", 0.5) and config.flag
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, path)
    path.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_config(Outer, path)  # safe_load refuses python tags
    with pytest.raises(FileNotFoundError):
        load_config(Outer, tmp_path / "missing.yaml")
