"""Images found unreadable while loading are warned and counted once per file, with DataLoader workers too,
and each epoch's total reaches the log and TensorBoard (``data/unreadable_images``)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from yolov3.data.bad_data import BadDataPolicy
from yolov3.data.loader import build_train_loader, end_epoch_unreadable_images
from yolov3.data.mosaic import MosaicConfig
from yolov3.data.multiscale import MultiScaleConfig
from yolov3.data.transforms import AugmentConfig
from yolov3.data.yolo_txt import YoloTxtDataset
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config

NAMES = ("a", "b", "c")


def yolo_folder(root: Path, good: int = 3) -> Path:
    """``good`` readable JPEGs and ``bad.jpg``, truncated: its header reads (it passes the scan), its pixels do not."""
    rng = np.random.default_rng(0)
    for name in [f"good{index}" for index in range(good)] + ["bad"]:
        path = root / "images" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    bad = root / "images" / "bad.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return bad


@pytest.fixture()
def warnings_file(tmp_path: Path) -> Path:
    """Bad-data warnings of this process and of forked DataLoader workers, in one file (caplog sees only ours)."""
    path = tmp_path / "warnings.log"
    handler = logging.FileHandler(path)
    logger = logging.getLogger("yolov3.data.bad_data")
    logger.addHandler(handler)
    yield path
    logger.removeHandler(handler)
    handler.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_truncated_image_drawn_often_is_warned_once_and_counted_once_per_epoch(
    tmp_path: Path, warnings_file: Path, workers: int
) -> None:
    bad = yolo_folder(tmp_path)
    dataset = YoloTxtDataset(tmp_path / "images", NAMES, bad_data=BadDataPolicy("skip"), progress=False)
    augment = AugmentConfig(transforms=(), mosaic=MosaicConfig(probability=1.0))
    loader = build_train_loader(
        dataset, augment, batch_size=2, workers=workers, multiscale=MultiScaleConfig(enabled=False), image_size=64
    )
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        batches = list(loader)
        draws = sum(any(path == str(bad) for path, _ in batch.image_problems) for batch in batches)
        assert draws == len(batches) == 2  # every mosaic of 4 out of 4 images meets it
        assert end_epoch_unreadable_images(loader, epoch + 1) == {"data/unreadable_images": 1.0}
    warned = [line for line in warnings_file.read_text().splitlines() if "bad.jpg" in line]
    assert len(warned) == 1 and warned[0].startswith(f"{bad}: ") and warned[0].endswith("(skipped)")
    assert dataset.bad_data_report()["unreadable_image"] == 1


def test_the_trainer_logs_the_epoch_total_to_tensorboard(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    yolo_folder(tmp_path / "data")
    config = {
        "data": {
            "dataset": {
                "format": "yolo",
                "root": str(tmp_path / "data"),
                "train": {"images": "images"},
                "val": {"images": "images"},
                "names": list(NAMES),
            },
            "image_size": 64,
            "batch_size": 2,
            "workers": 0,
            "augment": {"transforms": [], "mosaic": {"probability": 1.0}},
        },
        "model": {"name": "yolov3_tiny_test"},
        "train": {"epochs": 1, "ema": False},
        "logging": {"log_dir": str(tmp_path / "logs"), "images_every_epochs": 0, "histograms_every_epochs": 0},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "logs" / "run"
    with caplog.at_level(logging.WARNING):
        build_trainer(load_train_config(path), run, progress=False).fit()
    assert "epoch 1: 1 unreadable image(s) skipped (1 different in this run" in caplog.text
    events = EventAccumulator(str(run))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("data/unreadable_images")] == [(1, 1.0)]
