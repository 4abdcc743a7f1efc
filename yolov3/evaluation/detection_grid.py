"""A picture of detections against the ground truth: network-input images, true boxes in white."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from yolov3.atomic import atomic_output
from yolov3.data.transforms import Normalization, tensor_to_image
from yolov3.inference.draw import draw_detections

TRUTH_COLOUR = (255, 255, 255)
Sample = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]


def draw_sample(
    image: torch.Tensor,
    result: dict[str, torch.Tensor],
    truth: torch.Tensor,
    class_names: Sequence[str] | None,
    normalization: Normalization = "darknet",
    score_threshold: float = 0.25,
) -> np.ndarray:
    """One (3, H, W) network input as (H, W, 3) uint8 RGB: ``truth`` rows (class, cx, cy, w, h in 0..1) in
    white, then the detections (network pixels) scoring at least ``score_threshold``, coloured by class."""
    canvas = np.ascontiguousarray(tensor_to_image(image, normalization))
    height, width = canvas.shape[:2]
    for _, center_x, center_y, box_width, box_height in truth.tolist():
        top_left = (round((center_x - box_width / 2) * width), round((center_y - box_height / 2) * height))
        bottom_right = (round((center_x + box_width / 2) * width), round((center_y + box_height / 2) * height))
        cv2.rectangle(canvas, top_left, bottom_right, TRUTH_COLOUR, 1)
    keep = result["scores"] >= score_threshold
    return draw_detections(canvas, {key: value[keep] for key, value in result.items()}, class_names)


def save_detection_grid(
    samples: Sequence[Sample],
    path: str | os.PathLike,
    class_names: Sequence[str] | None,
    normalization: Normalization = "darknet",
    score_threshold: float = 0.25,
    columns: int = 4,
) -> Path:
    """Draw ``samples`` (as :func:`draw_sample`) into one grid image at ``path`` (written atomically)."""
    if not samples:
        raise ValueError("save_detection_grid needs at least one sample")
    panels = [draw_sample(*sample, class_names, normalization, score_threshold) for sample in samples]
    height = max(panel.shape[0] for panel in panels)
    width = max(panel.shape[1] for panel in panels)
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    grid = np.zeros((rows * height, columns * width, 3), np.uint8)
    for index, panel in enumerate(panels):
        row, column = divmod(index, columns)
        grid[row * height : row * height + panel.shape[0], column * width : column * width + panel.shape[1]] = panel
    path = Path(path)
    with atomic_output(path) as temporary:
        ok, encoded = cv2.imencode(path.suffix or ".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{path}: cannot encode an image with suffix {path.suffix!r}")
        Path(temporary).write_bytes(encoded.tobytes())
    return path
