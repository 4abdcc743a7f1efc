"""``python -m yolov3.data.show``: statistics by hand, plots written, the batch grid, the CLI end to end."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from augment_testing import COLOURS, ColouredBoxesDataset

from yolov3.cli.show import main
from yolov3.data.inspection import compute_statistics, draw_batch, format_statistics, plot_statistics
from yolov3.data.loader import build_val_loader
from yolov3.data.shapes_dataset import generate_shapes_dataset
from yolov3.data.transforms import AugmentConfig


def test_statistics_counted_by_hand() -> None:
    # Images 4 and 9 are empty; images 0-3 hold colours 0-11, images 5-8 colours 15-26 = 0-11 again.
    statistics = compute_statistics(ColouredBoxesDataset(count=10, with_empty=True), progress=False)
    assert statistics.num_images == 10 and statistics.images_without_boxes == 2 and statistics.num_boxes == 24
    assert statistics.boxes_per_class.tolist() == [2] * 12 + [0] * (len(COLOURS) - 12)
    assert statistics.images_per_class.tolist() == [2] * 12 + [0] * (len(COLOURS) - 12)
    # Image 0 is 200 x 200: its first box spans 0.05..0.40 of the width, 0.06..0.45 of the height.
    assert statistics.box_widths[0] == 70 and statistics.box_heights[0] == 78
    table = format_statistics(statistics)
    assert "images: 10 (2 without boxes), boxes: 24, classes: 15" in table
    assert "| colour0 | 2 | 8.3% | 2 |" in table and "| colour14 | 0 | 0.0% | 0 |" in table
    assert "| width |" in table and "| height |" in table
    limited = compute_statistics(ColouredBoxesDataset(count=10, with_empty=True), limit=3, progress=False)
    assert limited.num_images == 3 and limited.num_boxes == 9


class AnnotationsOnly(ColouredBoxesDataset):
    """A dataset that can list its boxes without decoding an image, like DetectionDataset."""

    def __getitem__(self, index: int):
        raise AssertionError("statistics must not decode images when boxes_and_labels exists")

    def boxes_and_labels(self, index: int):
        sample = super().__getitem__(index)
        return sample.boxes_xyxy, sample.labels, (sample.height, sample.width)


def test_statistics_use_annotations_without_pixels() -> None:
    statistics = compute_statistics(AnnotationsOnly(count=4), progress=False)
    assert statistics.num_boxes == 12


def test_plot_and_batch_grid(tmp_path: Path) -> None:
    dataset = ColouredBoxesDataset(count=3, base_size=96)
    path = plot_statistics(compute_statistics(dataset, progress=False), tmp_path / "statistics.png")
    plot = cv2.imread(str(path))
    assert plot is not None and plot.shape[0] > 200 and plot.shape[1] > 400
    batch = next(iter(build_val_loader(dataset, AugmentConfig(), batch_size=3, workers=0, image_size=96)))
    grid = draw_batch(batch, dataset.class_names, "darknet", columns=2)
    assert grid.shape == (2 * (96 + 4) + 4, 2 * (96 + 4) + 4, 3) and grid.dtype == np.uint8
    plain = (batch.images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (3,H,W) -> (H,W,3)
    drawn = grid[4 : 4 + 96, 4 : 4 + 96]
    assert (drawn != plain).any(axis=2).sum() > 100  # box outlines and labels were drawn


def test_cli_on_a_synthetic_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    layout = generate_shapes_dataset(
        tmp_path / "shapes", num_train=6, num_val=2, image_size=(128, 128), formats=("yolo",), progress=False
    )
    augment = tmp_path / "augment.yaml"
    augment.write_text("transforms:\n  - {name: ToGray, p: 0.5}\nmosaic: {probability: 1.0}\n")
    out = tmp_path / "show"
    arguments = ["--data", str(layout.yolo_yaml), "--augment", str(augment), "--out", str(out)]
    assert main([*arguments, "--batch-size", "4", "--image-size", "160"]) == 0
    printed = capsys.readouterr().out
    assert "images: 6" in printed and "| circle |" in printed
    assert cv2.imread(str(out / "batch.png")).shape == (2 * (160 + 4) + 4, 2 * (160 + 4) + 4, 3)
    assert cv2.imread(str(out / "statistics.png")) is not None
    assert (out / "statistics.md").read_text().startswith("images: 6")


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    augment = tmp_path / "augment.yaml"
    augment.write_text("transforms:\n  - {name: Flip}\n")
    assert main(["--data", str(tmp_path / "data.yaml"), "--augment", str(augment), "--out", str(tmp_path)]) == 2
    assert "unknown transform 'Flip'" in capsys.readouterr().err
