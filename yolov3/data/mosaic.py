"""Mosaic (four images around a random centre) and MixUp (two images blended), as a dataset wrapper.

:class:`MosaicDataset` wraps a dataset of :class:`~yolov3.data.sample.DetectionSample` and returns
samples of the same kind, so the albumentations pipeline runs after it. With probability
``mosaic.probability`` a sample is a mosaic filling the network input (H, W): the image asked for and
three random ones, each resized to fit (H, W) keeping its aspect, placed in the four quadrants around a
centre drawn in ``center_range`` of the input, the quadrant corners meeting at the centre (Ultralytics'
``load_mosaic`` followed by its centre crop). Boxes are shifted, clipped to the visible part of their
image, and dropped when less than ``min_visibility`` of their area or ``min_box_size`` pixels of width or
height remains. With probability ``mixup_probability`` the result is blended with another such sample
(letterboxed to the same size), ratio ~ Beta(``mixup_beta``, ``mixup_beta``), and keeps both sets of boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from torch.utils.data import Dataset

from yolov3.data.letterbox import compute_letterbox, letterbox_image
from yolov3.data.sample import DetectionSample, dataset_class_names, sized


@dataclass(frozen=True)
class MosaicConfig:
    """Probabilities and limits of mosaic and MixUp (``augment.mosaic`` in the YAML)."""

    probability: float = 1.0
    mixup_probability: float = 0.0
    mixup_beta: float = 32.0
    center_range: tuple[float, float] = (0.25, 0.75)  # mosaic centre, as fractions of the input size
    min_visibility: float = 0.2
    min_box_size: float = 2.0

    def __post_init__(self) -> None:
        for name in ("probability", "mixup_probability", "min_visibility"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"mosaic.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mixup_beta <= 0:
            raise ValueError(f"mosaic.mixup_beta must be > 0, got {self.mixup_beta}")
        low, high = self.center_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"mosaic.center_range must satisfy 0 <= low <= high <= 1, got {self.center_range}")
        if self.min_box_size < 0:
            raise ValueError(f"mosaic.min_box_size must be >= 0, got {self.min_box_size}")

    @property
    def enabled(self) -> bool:
        return self.probability > 0 or self.mixup_probability > 0


def _concatenate(samples: Sequence[DetectionSample], image: np.ndarray, boxes: list[np.ndarray]) -> DetectionSample:
    """One sample with ``image`` and every sample's labels and flags; the first sample names it."""
    first = samples[0]
    return DetectionSample(
        image=image,
        boxes_xyxy=np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), np.float32),  # (M, 4)
        labels=np.concatenate([sample.labels for sample in samples]),
        image_id=first.image_id,
        path=first.path,
        iscrowd=np.concatenate([sample.iscrowd for sample in samples]),
        difficult=np.concatenate([sample.difficult for sample in samples]),
        image_problems=tuple(problem for sample in samples for problem in sample.image_problems),
    )


class MosaicDataset(Dataset):
    """``dataset`` with mosaic and MixUp; items are an index, or (index, (height, width)) of the input."""

    def __init__(
        self,
        dataset: Dataset,
        config: MosaicConfig,
        fill: tuple[int, int, int] = (127, 127, 127),
        image_size: int | tuple[int, int] = 416,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.fill = fill
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random sequence (each DataLoader worker calls this with its own seed)."""
        self.random = np.random.default_rng(seed)

    @property
    def class_names(self) -> Sequence[str]:
        return dataset_class_names(self.dataset)

    def __len__(self) -> int:
        return len(sized(self.dataset))

    def __getitem__(self, item: int | tuple[int, tuple[int, int]]) -> DetectionSample:
        index, size = item if isinstance(item, tuple) else (item, self.image_size)
        return self.load(int(index), (int(size[0]), int(size[1])))

    def load(self, index: int, size: tuple[int, int]) -> DetectionSample:
        """Sample ``index`` as a mosaic (or not) for an input of ``size`` = (height, width), then MixUp (or not)."""
        sample = self._mosaic_or_single(index, size)
        if self.random.random() >= self.config.mixup_probability:
            return sample
        other = self._mosaic_or_single(int(self.random.integers(len(sized(self.dataset)))), size)
        first, second = self._fit(sample, size), self._fit(other, size)
        ratio = float(self.random.beta(self.config.mixup_beta, self.config.mixup_beta))
        blended = cv2.addWeighted(first.image, ratio, second.image, 1.0 - ratio, 0.0)
        return _concatenate([first, second], blended, [first.boxes_xyxy, second.boxes_xyxy])

    def _mosaic_or_single(self, index: int, size: tuple[int, int]) -> DetectionSample:
        if self.random.random() < self.config.probability:
            others = self.random.integers(len(sized(self.dataset)), size=3)
            return self.mosaic([index, *(int(other) for other in others)], size)
        return self.dataset[index]

    def _fit(self, sample: DetectionSample, size: tuple[int, int]) -> DetectionSample:
        """``sample`` letterboxed to ``size`` (unchanged if it already has that size)."""
        if sample.image.shape[:2] == size:
            return sample
        image, placement = letterbox_image(sample.image, size, fill=self.fill)
        return _concatenate([sample], image, [placement.boxes_to_network(sample.boxes_xyxy)])

    def mosaic(self, indices: Sequence[int], size: tuple[int, int]) -> DetectionSample:
        """Four samples (top-left, top-right, bottom-left, bottom-right) around a random centre in ``size``."""
        height, width = size
        low, high = self.config.center_range
        center_x = int(self.random.uniform(low, high) * width)
        center_y = int(self.random.uniform(low, high) * height)
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        canvas[...] = np.asarray(self.fill, dtype=np.uint8)
        samples = [self.dataset[index] for index in indices]
        kept_boxes, kept_samples = [], []
        for quadrant, sample in enumerate(samples):
            placement = compute_letterbox(sample.image.shape[:2], size)
            tile_height, tile_width = placement.resized_size
            tile = cv2.resize(sample.image, (tile_width, tile_height), interpolation=cv2.INTER_LINEAR)
            # The tile's top-left corner, so that its corner facing the centre touches the centre.
            origin_x = center_x - tile_width if quadrant in (0, 2) else center_x
            origin_y = center_y - tile_height if quadrant in (0, 1) else center_y
            left, top = max(origin_x, 0), max(origin_y, 0)
            right, bottom = min(origin_x + tile_width, width), min(origin_y + tile_height, height)
            if right > left and bottom > top:
                canvas[top:bottom, left:right] = tile[
                    top - origin_y : bottom - origin_y, left - origin_x : right - origin_x
                ]
            scale = np.array([placement.scale_x, placement.scale_y] * 2, dtype=np.float32)
            boxes = sample.boxes_xyxy * scale + np.array([origin_x, origin_y] * 2, dtype=np.float32)
            clipped = np.stack(
                [
                    boxes[:, 0].clip(left, right),
                    boxes[:, 1].clip(top, bottom),
                    boxes[:, 2].clip(left, right),
                    boxes[:, 3].clip(top, bottom),
                ],
                axis=1,
            ).reshape(-1, 4)  # 4 x (M,) -> (M, 4)
            keep = self._visible(boxes, clipped)
            kept_boxes.append(clipped[keep])
            kept_samples.append(_select(sample, keep))
        return _concatenate(kept_samples, canvas, kept_boxes)

    def _visible(self, boxes: np.ndarray, clipped: np.ndarray) -> np.ndarray:
        """Which clipped boxes keep enough of their area and are wide and high enough."""
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        clipped_width = clipped[:, 2] - clipped[:, 0]
        clipped_height = clipped[:, 3] - clipped[:, 1]
        visible = clipped_width * clipped_height >= self.config.min_visibility * np.maximum(area, 1e-6)
        minimum = max(self.config.min_box_size, 1e-6)
        return visible & (clipped_width >= minimum) & (clipped_height >= minimum)


def _select(sample: DetectionSample, keep: np.ndarray) -> DetectionSample:
    """``sample`` with only the boxes (and labels, flags) where ``keep`` is true."""
    return DetectionSample(
        image=sample.image,
        boxes_xyxy=sample.boxes_xyxy[keep],
        labels=sample.labels[keep],
        image_id=sample.image_id,
        path=sample.path,
        iscrowd=sample.iscrowd[keep],
        difficult=sample.difficult[keep],
        image_problems=sample.image_problems,
    )
