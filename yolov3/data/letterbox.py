"""Letterboxing: resize keeping the aspect ratio, centre, and fill the border; and mapping boxes back.

The arithmetic is Darknet's (``letterbox_image``): the longer side fills the network input, the other
is scaled with integer division, and the image is centred with ``(size - new) // 2`` on the top/left.
``keep_aspect=False`` gives a plain stretch resize instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch

# Boxes in numpy or torch: each mapping returns the type it is given.
BoxesT = TypeVar("BoxesT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Letterbox:
    """How an (height, width) image was placed in the network input: scale, then offset by the padding."""

    original_size: tuple[int, int]  # (height, width)
    network_size: tuple[int, int]  # (height, width)
    resized_size: tuple[int, int]  # (height, width) of the image inside the input
    pad_top: float  # whole pixels here; DarknetLetterbox maps boxes back with Darknet's fractional padding
    pad_left: float

    @property
    def scale_x(self) -> float:
        return self.resized_size[1] / self.original_size[1]

    @property
    def scale_y(self) -> float:
        return self.resized_size[0] / self.original_size[0]

    def boxes_to_network(self, boxes_xyxy: BoxesT) -> BoxesT:
        """Boxes (N, 4) in original pixels -> network-input pixels."""
        scale = _like(boxes_xyxy, [self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        offset = _like(boxes_xyxy, [self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        return boxes_xyxy * scale + offset

    def boxes_to_original(self, boxes_xyxy: BoxesT, clip: bool = True) -> BoxesT:
        """Boxes (N, 4) in network-input pixels -> original-image pixels, clipped to the image by default."""
        scale = _like(boxes_xyxy, [self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        offset = _like(boxes_xyxy, [self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        boxes = (boxes_xyxy - offset) / scale
        if clip:
            height, width = self.original_size
            limits = _like(boxes_xyxy, [width, height, width, height])
            boxes = boxes.clip(0, None).clip(None, limits)  # elementwise max with 0, then min with the limits
        return boxes


def _like(reference: BoxesT, values: list[float]) -> BoxesT:
    if isinstance(reference, torch.Tensor):
        return torch.tensor(values, dtype=reference.dtype, device=reference.device)
    return np.asarray(values, dtype=reference.dtype if reference.dtype.kind == "f" else np.float64)


def compute_letterbox(
    original_size: tuple[int, int], network_size: tuple[int, int], keep_aspect: bool = True
) -> Letterbox:
    """Darknet's placement of an image of ``original_size`` in an input of ``network_size`` (both (H, W))."""
    height, width = original_size
    net_height, net_width = network_size
    if min(height, width, net_height, net_width) < 1:
        raise ValueError(f"sizes must be positive, got image {original_size} and network {network_size}")
    if not keep_aspect:
        return Letterbox(original_size, network_size, network_size, 0, 0)
    if net_width / width < net_height / height:
        new_width, new_height = net_width, (height * net_width) // width
    else:
        new_height, new_width = net_height, (width * net_height) // height
    new_height, new_width = max(1, new_height), max(1, new_width)
    return Letterbox(
        original_size,
        network_size,
        (new_height, new_width),
        (net_height - new_height) // 2,
        (net_width - new_width) // 2,
    )


def letterbox_image(
    image: np.ndarray, network_size: tuple[int, int], fill: float | tuple[float, ...] = 0.5, keep_aspect: bool = True
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox an (H, W, C) image (uint8 or float) with bilinear resizing.

    ``fill`` is in the image's own scale: 0.5 for float images in 0..1 (Darknet), 127 or the ImageNet mean
    for uint8 images.
    """
    placement = compute_letterbox(image.shape[:2], network_size, keep_aspect)
    new_height, new_width = placement.resized_size
    resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    canvas = np.empty((*network_size, image.shape[2]), dtype=image.dtype)
    canvas[...] = np.asarray(fill, dtype=image.dtype)
    top, left = int(placement.pad_top), int(placement.pad_left)  # whole pixels from compute_letterbox
    canvas[top : top + new_height, left : left + new_width] = resized
    return canvas, placement
