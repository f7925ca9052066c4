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
    ({"name": "x", "inner": {"lr": "1e-4x"}}, "inner.lr: expected a number"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_exponents_without_a_dot_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-4`` as a string; in a number field it is the number."""
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ninner:\n  lr: 3E2\n")
    assert load_config(Outer, path).inner.lr == 300.0
    for text, value in (("1e-4", 1e-4), ("-2.5e3", -2500.0), (".5e1", 5.0)):
        assert load_config(Outer, path, [f"inner.lr={text}"]).inner.lr == value


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


def _assert_subset(written, resolved, where: str) -> None:
    if isinstance(written, dict):
        for key, value in written.items():
            _assert_subset(value, resolved[key], f"{where}.{key}")
    else:
        assert written == resolved, where


def test_every_shipped_preset_loads_into_its_typed_config_and_shows(capsys):
    import yaml

    from sppnet.cli import _config_class, main
    from sppnet.config import preset_names, preset_path

    names = preset_names()
    for method in ("classify", "detect-sppnet", "detect-fast-rcnn", "detect-rcnn"):
        assert {f"{method}-tiny", f"{method}-paper"} <= set(names), method
    for name in names:
        config_class = _config_class(name)
        config = load_config(config_class, name)
        # Every value written in the file is the resolved config's.
        _assert_subset(yaml.safe_load(preset_path(name).read_text()), to_dict(config), name)
        assert main(["config", "show", name]) == 0
        assert from_dict(config_class, yaml.safe_load(capsys.readouterr().out)) == config
        with pytest.raises(ConfigError, match="unknown config key 'no_such_key'"):
            load_config(config_class, name, ["no_such_key=1"])


@pytest.mark.parametrize("method", ["detect-sppnet", "detect-fast-rcnn", "detect-rcnn"])
def test_paper_presets_pretrain_with_the_papers_classifier(method):
    """Without --backbone a paper preset must pre-train its trunk with the
    paper's classifier (ZF-5 at full width, 224 crops), not classify-tiny."""
    from sppnet.cli import _config_class

    pretrain = load_config(_config_class(f"{method}-paper"), f"{method}-paper").pretrain
    assert pretrain.preset == "classify-paper"
    classifier = load_config(_config_class("classify-paper"), pretrain.preset)
    assert (classifier.model.width, classifier.train.crop) == (1.0, 224)


@pytest.mark.parametrize("edit, message", [
    ({"box_vote": 0.0}, "test.box_vote must be an IoU in"), ({"box_vote": 1.5}, "test.box_vote must be an IoU in"),
    ({"nms_sigma": 0.0}, "test.nms_sigma must be > 0"),
    ({"refine": -1}, "test.refine must be an int >= 0"), ({"refine": 2.5}, "test.refine must be an int >= 0"),
    ({"refine": True}, "test.refine must be an int >= 0"),
])
def test_detection_test_settings_refuse_values_out_of_range(edit, message):
    from sppnet.engine.detection_stages import TestConfig

    assert TestConfig(box_vote=0.5).box_vote == 0.5
    with pytest.raises(ValueError, match=message):
        TestConfig(**edit)
