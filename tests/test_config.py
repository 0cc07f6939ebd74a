"""The configuration loader: YAML + overrides into nested dataclasses."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from spin.config import ConfigError, build_config, config_to_dict, load_config


@dataclass(frozen=True)
class Stage:
    name: str
    iterations: int = 10


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    stages: tuple[Stage, ...] = ()
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    path: str | None = None
    steps: int = 5


def test_defaults_yaml_and_overrides(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("steps: 7\ninner:\n  lr: 1\n  stages:\n    - {name: cam, iterations: 3}\n")
    config = load_config(Outer, yaml_file, ["inner.mode=b", "path=/x", "inner.lr=2e-4"])
    assert config.steps == 7
    assert config.inner == Inner(lr=2e-4, stages=(Stage("cam", 3),), mode="b")
    assert isinstance(config.inner.lr, float)
    assert config.path == "/x"
    assert build_config(Outer, config_to_dict(config)) == config


def test_errors_name_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\].*steps"):
        load_config(Outer, overrides=["stepz=3"])
    with pytest.raises(ConfigError, match=r"inner.mode: 'c' is not one of \['a', 'b'\]"):
        load_config(Outer, overrides=["inner.mode=c"])
    with pytest.raises(ConfigError, match="steps: expected int"):
        load_config(Outer, overrides=["steps=abc"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, overrides=["steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, "/nonexistent.yaml")
