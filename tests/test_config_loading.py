"""Strict typed configuration from YAML: conversions, unknown keys with suggestions, dotted overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from yolov3.config_loading import ConfigError, apply_overrides, load_dataclass, load_yaml, to_dict


@dataclass(frozen=True)
class Optimizer:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = 0.001
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Config:
    epochs: int = 10
    amp: bool = False
    output: Path = Path("logs")
    names: tuple[str, ...] = ()
    resume: str | None = None
    optimizer: Optimizer = field(default_factory=Optimizer)


def test_loads_nested_values_with_types() -> None:
    config = load_dataclass(
        Config,
        {
            "epochs": 3,
            "amp": True,
            "output": "runs",
            "names": ["a", "b"],
            "optimizer": {"name": "adam", "learning_rate": 1},
        },
    )
    assert config == Config(3, True, Path("runs"), ("a", "b"), None, Optimizer("adam", 1.0))
    assert isinstance(config.optimizer.learning_rate, float)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"epoch": 3}, "cfg.yaml: unknown key 'epoch' (did you mean 'epochs'?)"),
        ({"optimizer": {"lr": 0.1}}, "unknown key 'optimizer.lr'"),
        ({"optimizer": {"learning_rat": 0.1}}, "(did you mean 'optimizer.learning_rate'?)"),
        ({"epochs": "three"}, "cfg.yaml: epochs: expected an integer, got 'three'"),
        ({"epochs": True}, "epochs: expected an integer, got True"),
        ({"amp": "yes"}, "amp: expected true or false, got 'yes'"),
        (
            {"optimizer": {"name": "adma"}},
            "optimizer.name: 'adma' is not one of 'sgd', 'adam', 'adamw' (did you mean 'adam'?)",
        ),
        ({"optimizer": {"betas": [0.9]}}, "optimizer.betas: expected 2 values, got 1"),
        ({"optimizer": 3}, "optimizer: expected a mapping of Optimizer fields, got 3"),
        ({"names": "abc"}, "names: expected a list, got 'abc'"),
    ],
)
def test_errors_name_file_and_key(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_dataclass(Config, mapping, source="cfg.yaml")
    assert message in str(caught.value)


def test_overrides_and_round_trip(tmp_path: Path) -> None:
    mapping = apply_overrides(
        {"optimizer": {"name": "sgd"}}, ["epochs=5", "optimizer.learning_rate=0.01", "names=[x, y]"]
    )
    config = load_dataclass(Config, mapping)
    assert (config.epochs, config.optimizer.learning_rate, config.names) == (5, 0.01, ("x", "y"))
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    assert load_dataclass(Config, load_yaml(path)) == config
    with pytest.raises(ConfigError, match=r"must look like key\.subkey=value"):
        apply_overrides({}, ["epochs"])


def test_load_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_yaml(listed)
