"""Test helpers for augmentation and batching: images of filled boxes, one distinct colour per box.

Colour ``k`` is also the box's class, so after any geometric transform the bounding box of the pixels of
colour ``k`` is where box ``k`` must be. Colours come from {0, 128, 255}^3 with at least one 255 channel:
any two differ by at least 127 in some channel, and all are far from the black background and from the
grey (127) letterbox fill.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from yolov3.data.sample import DetectionSample

COLOURS = tuple(
    colour
    for colour in itertools.product((0, 128, 255), repeat=3)
    if 255 in colour and colour not in ((255, 255, 255), (128, 128, 255), (128, 255, 128), (255, 128, 128))
)
COLOUR_TOLERANCE = 60


def draw_boxes_image(size: tuple[int, int], boxes: np.ndarray, colours: list[int], background: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 with each box (x1, y1, x2, y2 integer pixels) filled with ``COLOURS[colours[i]]``."""
    image = np.full((*size, 3), background, dtype=np.uint8)
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), colours, strict=True):
        image[y1:y2, x1:x2] = COLOURS[colour]
    return image


def colour_bounding_boxes(image: np.ndarray, colour: int) -> list[np.ndarray]:
    """xyxy bounding boxes (pixel edges) of each connected region within tolerance of ``COLOURS[colour]``.

    A mosaic may show the same image twice, hence several regions of one colour.
    """
    distance = np.abs(image.astype(np.int16) - np.array(COLOURS[colour], dtype=np.int16)).max(axis=2)
    mask = (distance <= COLOUR_TOLERANCE).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = []
    for left, top, width, height, _ in stats[1:count]:  # row 0 is the background
        boxes.append(np.array([left, top, left + width, top + height], dtype=np.float32))
    return boxes


def iou(first: np.ndarray, second: np.ndarray) -> float:
    """IoU of two xyxy boxes."""
    width = max(0.0, min(first[2], second[2]) - max(first[0], second[0]))
    height = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    intersection = width * height
    area = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
    return float(intersection / (area - intersection))


def targets_to_pixel_boxes(targets: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(M, 5) class, cx, cy, w, h normalized -> (M, 4) xyxy pixels of an image of ``size`` = (H, W)."""
    height, width = size
    values = targets.numpy().reshape(-1, 5)
    centers, sizes = values[:, 1:3], values[:, 3:5]
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    return boxes * np.array([width, height, width, height], dtype=np.float32)


class ColouredBoxesDataset(Dataset):
    """``count`` images of varied sizes, each with up to three large boxes of colours unique in the dataset.

    Image ``i`` has boxes of colours ``3i, 3i+1, 3i+2`` (modulo the colour count), class = colour index;
    every fifth image has no boxes when ``with_empty``.
    """

    def __init__(self, count: int = 4, base_size: int = 200, with_empty: bool = False) -> None:
        self.count = count
        self.base_size = base_size
        self.with_empty = with_empty
        self.class_names = tuple(f"colour{index}" for index in range(len(COLOURS)))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> DetectionSample:
        height = self.base_size + 8 * (index % 5)
        width = int(self.base_size * (1.0 + 0.25 * (index % 3)))
        if self.with_empty and index % 5 == 4:
            boxes = np.zeros((0, 4), dtype=np.float32)
        else:
            boxes = np.array(
                [
                    [0.05 * width, 0.06 * height, 0.40 * width, 0.45 * height],
                    [0.55 * width, 0.10 * height, 0.95 * width, 0.40 * height],
                    [0.20 * width, 0.55 * height, 0.70 * width, 0.95 * height],
                ],
                dtype=np.float32,
            ).round()
        colours = [(3 * index + k) % len(COLOURS) for k in range(len(boxes))]
        image = draw_boxes_image((height, width), boxes, colours)
        return DetectionSample(image, boxes, colours, image_id=index, path=f"image{index}.png")
