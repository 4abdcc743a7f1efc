"""One annotated image, as every dataset format returns it before augmentation."""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np
from torch.utils.data import Dataset


@dataclass
class DetectionSample:
    """An image with its boxes.

    ``boxes_xyxy`` (M, 4) float32 in pixels of ``image`` (H, W, 3 uint8 RGB); ``labels`` (M,) int64
    contiguous class indices 0..C-1; ``iscrowd`` and ``difficult`` (M,) bool mark boxes that count for
    evaluation only (COCO crowd regions, VOC difficult objects). ``image_problems`` lists the ``(path, reason)``
    of unreadable images skipped to make this sample (they travel with it out of DataLoader workers).
    """

    image: np.ndarray
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    image_id: int = 0
    path: str = ""
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    image_problems: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        count = len(self.labels)
        if len(self.boxes_xyxy) != count:
            raise ValueError(f"{self.path or 'sample'}: {len(self.boxes_xyxy)} boxes but {count} labels")
        for name in ("iscrowd", "difficult"):
            flags = np.asarray(getattr(self, name), dtype=bool).reshape(-1)
            setattr(self, name, flags if len(flags) == count else np.zeros(count, dtype=bool))

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


class _NamedClasses(Protocol):
    @property
    def class_names(self) -> Sequence[str]: ...


def sized(dataset: Dataset) -> Sized:
    """``dataset`` as the sized dataset it is: every dataset the loaders read has ``__len__`` (a torch ``Dataset``
    need not declare one)."""
    return cast(Sized, dataset)


def dataset_class_names(dataset: Dataset) -> Sequence[str]:
    """``dataset.class_names``: a detection dataset's, or that of a wrapper of one (mosaic, transforms)."""
    return cast(_NamedClasses, dataset).class_names
