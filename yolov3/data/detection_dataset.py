"""The interface every dataset format implements: annotations scanned once, images decoded on access.

A format (COCO, VOC, YOLO txt, KITTI) parses and validates its labels into :class:`ImageRecord` objects
when it is built, and hands them to :class:`DetectionDataset`, which stores them packed in a few numpy
arrays (so DataLoader workers do not copy thousands of small Python objects) and provides:

- ``dataset[i]`` -> :class:`~yolov3.data.sample.DetectionSample` (the image decoded from disk);
- ``dataset.boxes_and_labels(i)`` -> ``(boxes_xyxy, labels, (height, width))`` without reading pixels;
- ``dataset.record(i)`` -> :class:`ImageRecord` (everything but the pixels);
- ``dataset.class_names``, ``len(dataset)``, ``dataset.bad_data_report()``.

Unreadable images under the ``skip`` policy: ``dataset[i]`` remembers the index and returns the next readable
sample (``i + 1``, ``i + 2``, ... wrapping around), so a DataLoader worker never crashes on one bad file; the
returned ``sample.path`` tells which image it is, and ``sample.image_problems`` lists the ``(path, reason)`` of
the unreadable images skipped on the way. In the main process the dataset reports them at once to
``dataset.unreadable_images`` (:class:`~yolov3.data.bad_data.UnreadableImages`: a warning and a count per
file); in a DataLoader worker it only attaches them, and the loader reports them in the main process. When no
image can be read, it raises :class:`NoReadableImageError` (a ``RuntimeError``). Under ``raise``, the
``ImageReadError`` propagates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch.utils.data
from torch.utils.data import Dataset

from yolov3.data.bad_data import BadDataPolicy, UnreadableImages, find_truncation
from yolov3.data.image_io import ImageReadError, read_image_rgb
from yolov3.data.sample import DetectionSample

EXIF_ORIENTATION_TAG = 0x0112
MAX_IMAGE_SIDE = 2**31 - 1  # the largest width or height any image format stores (PNG's)


class NoReadableImageError(RuntimeError):
    """Every image of a dataset failed to load (each was reported as ``unreadable_image``)."""


@dataclass(frozen=True)
class ImageRecord:
    """One image's validated annotations: boxes (M, 4) float32 in its pixels, labels (M,) int64, flags (M,)."""

    path: Path
    image_id: int
    size: tuple[int, int]  # (height, width)
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class DetectionDataset(Dataset[DetectionSample]):
    """Images with boxes; subclasses scan their format into :class:`ImageRecord` objects."""

    def __init__(
        self, records: list[ImageRecord], class_names: tuple[str, ...], bad_data: BadDataPolicy, source: str
    ) -> None:
        self.class_names = tuple(class_names)
        self.bad_data = bad_data
        self.source = source
        counts = np.array([len(record.labels) for record in records], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (N + 1,)
        self._boxes = _concatenate([r.boxes_xyxy for r in records], (0, 4), np.float32)  # (total, 4)
        self._labels = _concatenate([r.labels for r in records], (0,), np.int64)
        self._iscrowd = _concatenate([_flags(r.iscrowd, len(r.labels)) for r in records], (0,), bool)
        self._difficult = _concatenate([_flags(r.difficult, len(r.labels)) for r in records], (0,), bool)
        self._sizes = np.array([r.size for r in records], dtype=np.int64).reshape(-1, 2)  # (N, 2) height, width
        self._image_ids = np.array([r.image_id for r in records], dtype=np.int64)
        self._paths = np.array([str(r.path) for r in records], dtype=np.str_)
        self._unreadable: dict[int, str] = {}  # index -> why it cannot be read
        self.unreadable_images = UnreadableImages(bad_data)
        if len(self._labels) and (self._labels.min() < 0 or self._labels.max() >= len(self.class_names)):
            raise ValueError(f"{source}: labels must lie in 0..{len(self.class_names) - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._image_ids)

    def record(self, index: int) -> ImageRecord:
        """Annotations of image ``index`` (copies), without reading the image."""
        start, end = self._offsets[index], self._offsets[index + 1]
        return ImageRecord(
            path=Path(str(self._paths[index])),
            image_id=int(self._image_ids[index]),
            size=(int(self._sizes[index, 0]), int(self._sizes[index, 1])),
            boxes_xyxy=self._boxes[start:end].copy(),
            labels=self._labels[start:end].copy(),
            iscrowd=self._iscrowd[start:end].copy(),
            difficult=self._difficult[start:end].copy(),
        )

    def boxes_and_labels(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """(boxes_xyxy (M, 4) float32 pixels, labels (M,) int64, (height, width)) without reading pixels."""
        record = self.record(index)
        return record.boxes_xyxy, record.labels, record.size

    def image_sizes(self) -> np.ndarray:
        """(N, 2) int64 (height, width) of every image, from the annotations or image headers."""
        return self._sizes.copy()

    def __getitem__(self, index: int) -> DetectionSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index %= len(self)
        problems: list[tuple[str, str]] = []
        for attempt in range(len(self)):
            candidate = (index + attempt) % len(self)
            if candidate not in self._unreadable:
                try:
                    sample = self._load(candidate)
                except ImageReadError as error:
                    if self.bad_data.mode == "raise":
                        raise
                    self._unreadable[candidate] = error.reason
                else:
                    sample.image_problems = tuple(problems)
                    self._report(problems)
                    return sample
            problems.append((str(self._paths[candidate]), self._unreadable[candidate]))
        self._report(problems)
        path, reason = problems[0]
        raise NoReadableImageError(
            f"{self.source}: none of the {len(self)} images can be read (the first: {path}: {reason})"
        )

    def _report(self, problems: list[tuple[str, str]]) -> None:
        """Warn and count now in the main process; a DataLoader worker leaves it to the loader."""
        if problems and torch.utils.data.get_worker_info() is None:
            self.unreadable_images.report(problems)

    def _load(self, index: int) -> DetectionSample:
        record = self.record(index)
        image = read_image_rgb(record.path)
        truncation = find_truncation(record.path)  # OpenCV decodes truncated JPEGs without an error
        if truncation:
            raise ImageReadError(record.path, truncation)
        height, width = image.shape[:2]
        boxes = record.boxes_xyxy
        if (height, width) != record.size:  # annotations disagree with the pixels: keep boxes inside the image
            boxes = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))
        return DetectionSample(
            image=image,
            boxes_xyxy=boxes,
            labels=record.labels,
            image_id=record.image_id,
            path=str(record.path),
            iscrowd=record.iscrowd,
            difficult=record.difficult,
        )

    def bad_data_report(self) -> dict[str, int]:
        """Problems counted by kind (see :mod:`yolov3.data.bad_data`) in this process."""
        return self.bad_data.counts()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, images={len(self)}, boxes={len(self._labels)}, "
            f"classes={self.num_classes})"
        )


def _concatenate(arrays: list[np.ndarray], empty_shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if not arrays:
        return np.zeros(empty_shape, dtype=dtype)
    return np.concatenate([np.asarray(a, dtype=dtype).reshape(-1, *empty_shape[1:]) for a in arrays])  # (total, ...)


def _flags(flags: np.ndarray, count: int) -> np.ndarray:
    flags = np.asarray(flags, dtype=bool).reshape(-1)  # (M,)
    return flags if len(flags) == count else np.zeros(count, dtype=bool)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header, as :func:`read_image_rgb` will decode it.

    Only the header is read (Pillow). EXIF orientations that rotate by 90 degrees swap the two, since
    OpenCV applies the orientation when decoding. Raises :class:`ImageReadError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file" if not path.exists() else "not a file")
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError) as error:  # Pillow raises UnidentifiedImageError (an OSError)
        raise ImageReadError(path, f"not a readable image header ({error})") from error
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)
