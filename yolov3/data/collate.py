"""Batching: stack transformed samples into a :class:`Batch`.

The batch convention, used by the loss and evaluation alike:

- ``images`` (B, 3, H, W) float, every image of the batch at the same size;
- ``targets`` (N, 6) float = (image index in batch, class, cx, cy, w, h), box coordinates normalized
  to 0..1 by the batch's W and H; N is the total number of boxes (0 when no image has any);
- per image, in batch order: ``paths``, ``image_ids``, ``original_sizes`` (height, width) as read from
  disk, and ``letterboxes`` (:class:`~yolov3.data.letterbox.Letterbox`) to map predictions back;
- ``image_problems``: ``(path, reason)`` of the unreadable images skipped while loading the batch (each once),
  reported in the main process by :class:`~yolov3.data.loader.DetectionLoader`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from yolov3.data.letterbox import Letterbox
from yolov3.data.transforms import TransformedSample


@dataclass
class Batch:
    """Images, targets and per-image metadata of one batch (see the module docstring)."""

    images: torch.Tensor  # (B, 3, H, W)
    targets: torch.Tensor  # (N, 6): image index, class, cx, cy, w, h (normalized)
    paths: list[str]
    image_ids: list[int]
    original_sizes: list[tuple[int, int]]  # (height, width) per image
    letterboxes: list[Letterbox]
    image_problems: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch with its tensors on ``device``."""
        return replace(
            self,
            images=self.images.to(device, non_blocking=non_blocking),
            targets=self.targets.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``: the batch with its tensors in pinned memory."""
        return replace(self, images=self.images.pin_memory(), targets=self.targets.pin_memory())


def collate_detections(samples: Sequence[TransformedSample]) -> Batch:
    """Stack samples (images of one size) into a :class:`Batch`, prefixing each target with its image index."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    shapes = {tuple(sample.image.shape) for sample in samples}
    if len(shapes) != 1:
        raise ValueError(f"images of one batch must share a size, got {sorted(shapes)}")
    targets = []
    for index, sample in enumerate(samples):
        boxes = sample.targets.float().reshape(-1, 5)  # (M, 5): class, cx, cy, w, h
        image_index = torch.full((len(boxes), 1), float(index))  # (M, 1)
        targets.append(torch.cat([image_index, boxes], dim=1))  # (M, 6)
    return Batch(
        images=torch.stack([sample.image for sample in samples]),  # B x (3, H, W) -> (B, 3, H, W)
        targets=torch.cat(targets).reshape(-1, 6),  # (N, 6)
        paths=[sample.path for sample in samples],
        image_ids=[sample.image_id for sample in samples],
        original_sizes=[sample.original_size for sample in samples],
        letterboxes=[sample.letterbox for sample in samples],
        image_problems=tuple(dict.fromkeys(problem for sample in samples for problem in sample.image_problems)),
    )
