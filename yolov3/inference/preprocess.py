"""Turning an RGB image into a network input, the way the model was trained to see it.

:class:`Preprocessing` is part of a model's contract (a checkpoint records it): Darknet's letterbox with
0.5 grey, or a plain stretch resize. Either way pixels are RGB divided by 255, and the image is resized in
float32, so the letterbox fill is exactly ``fill`` and the result matches Darknet's ``letterbox_image``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from yolov3.data.letterbox import Letterbox, letterbox_image


@dataclass(frozen=True)
class Preprocessing:
    """How images become network inputs: Darknet letterbox (``letterbox=True``) or stretch; border ``fill`` in 0..1."""

    letterbox: bool = True
    fill: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.fill <= 1.0:
            raise ValueError(f"Preprocessing.fill must be in 0..1 (pixels are RGB/255), got {self.fill}")


def preprocess(
    image_rgb_uint8: np.ndarray, input_size: tuple[int, int], preprocessing: Preprocessing = Preprocessing()
) -> tuple[torch.Tensor, Letterbox]:
    """An (H, W, 3) uint8 RGB image -> ((3, height, width) float32 in 0..1, its :class:`Letterbox` placement).

    ``input_size`` is the network's (height, width). Map boxes back with ``placement.boxes_to_original``.
    """
    if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3 or image_rgb_uint8.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {image_rgb_uint8.shape} dtype {image_rgb_uint8.dtype}"
        )
    image_float = image_rgb_uint8.astype(np.float32) / np.float32(255.0)  # (H, W, 3) in 0..1
    canvas, placement = letterbox_image(
        image_float, tuple(input_size), fill=preprocessing.fill, keep_aspect=preprocessing.letterbox
    )
    # (height, width, 3) -> (3, height, width)
    tensor = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))
    return tensor, placement
