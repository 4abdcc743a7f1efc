"""Every shipped training config loads strictly; the paper configs carry Darknet's published settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolov3.darknet.cfg import parse_cfg
from yolov3.train.config import load_train_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_the_expected_configs_exist() -> None:
    assert {path.stem for path in CONFIGS} >= {"shapes", "coco", "voc", "custom_yolo", "seed"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_loads(path: Path) -> None:
    config = load_train_config(path)
    assert config.data.image_size % 32 == 0


def test_paper_configs_follow_darknets_cfgs(shared_darknet: Path) -> None:
    for config_name, cfg_name in (("coco", "yolov3.cfg"), ("voc", "yolov3-voc.cfg")):
        config = load_train_config(Path(CONFIGS[0].parent / f"{config_name}.yaml"))
        net = parse_cfg(shared_darknet / cfg_name).net
        assert config.optimizer.learning_rate == net.learning_rate
        assert config.optimizer.momentum == net.momentum and config.optimizer.weight_decay == net.decay
        assert config.schedule.warmup == "burn_in" and config.schedule.warmup_steps == net.burn_in
        assert config.schedule.scales == net.scales
        fractions = tuple(round(step / net.max_batches, 1) for step in net.steps)
        assert config.schedule.step_fractions == fractions
        assert config.data.batch_size * config.train.accumulate == 64
        assert config.data.multiscale.enabled and (
            config.data.multiscale.min_size,
            config.data.multiscale.max_size,
        ) == (320, 608)


def test_seed_config() -> None:
    config = load_train_config(CONFIGS[0].parent / "seed.yaml")
    assert config.optimizer.name == "adam" and config.schedule.policy == "cosine_restarts"
    assert config.schedule.warmup != "none" and config.data.batch_size * config.train.accumulate == 64
    assert not config.data.multiscale.enabled
