"""The ``data:`` section of a training config: the dataset, its augmentation, batching and image size.

It lives below ``train`` so that evaluation (``python -m yolov3.evaluate --data <training config>``) reads the
same section, with the same checks, as the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yolov3.data.dataset_config import DatasetConfig
from yolov3.data.multiscale import MultiScaleConfig
from yolov3.data.transforms import AugmentConfig


@dataclass(frozen=True)
class DataConfig:
    dataset: DatasetConfig
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    multiscale: MultiScaleConfig = field(default_factory=lambda: MultiScaleConfig(enabled=False))
    image_size: int = 416  # training size when multiscale is off, and the validation size
    batch_size: int = 8
    workers: int = 2

    def __post_init__(self) -> None:
        if self.image_size % 32 or self.image_size <= 0:
            raise ValueError(f"image_size must be a positive multiple of 32, got {self.image_size}")
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError(f"batch_size >= 1 and workers >= 0 are required, got {self.batch_size}, {self.workers}")
