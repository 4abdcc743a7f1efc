"""A dataset's annotations as COCO-format ground truth, and detections as COCO results (the one converter,
used by validation, ``evaluate --data`` and ``detect``), for :func:`~yolov3.evaluation.coco.evaluate_coco`.

Category ids are the dataset's contiguous labels (0..C-1), so detections use ``category_id = label``.
Crowd and difficult boxes are kept with their flags: COCO ignores ``iscrowd``, VOC ignores ``difficult``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch


class AnnotatedDataset(Protocol):
    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def record(self, index: int) -> Any: ...


def coco_ground_truth(dataset: AnnotatedDataset) -> dict[str, Any]:
    """COCO instances dict of every image of ``dataset`` (no pixels are read)."""
    images, annotations = [], []
    for index in range(len(dataset)):
        record = dataset.record(index)
        height, width = record.size
        images.append({"id": int(record.image_id), "file_name": str(record.path), "height": height, "width": width})
        for box, label, crowd, difficult in zip(
            record.boxes_xyxy, record.labels, record.iscrowd, record.difficult, strict=True
        ):
            x1, y1, x2, y2 = (float(value) for value in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": int(record.image_id),
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(crowd),
                    "difficult": int(difficult),
                }
            )
    categories = [{"id": label, "name": name} for label, name in enumerate(dataset.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_detections(
    image_id: int,
    detections: dict[str, torch.Tensor],
    *,
    category_ids: Sequence[int] | None = None,
    rounded: bool = False,
) -> list[dict[str, Any]]:
    """One image's detections (boxes xyxy in its pixels, scores, labels) as COCO results.

    ``category_id`` is the label, or ``category_ids[label]`` (e.g. COCO's 80 -> 91 ids). Evaluation keeps
    every digit (float64); ``rounded=True`` is for results files (``detect --save-json``), the usual
    rounding of COCO results JSON: boxes to 1/1000 pixel, scores to 6 decimals.
    """
    boxes = detections["boxes"].detach().cpu().numpy().astype(np.float64)
    scores = detections["scores"].detach().cpu().numpy().astype(np.float64)
    labels = detections["labels"].detach().cpu().numpy()
    results = []
    for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels, strict=True):
        box = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(label) if category_ids is None else int(category_ids[int(label)]),
                "bbox": [round(value, 3) for value in box] if rounded else box,
                "score": round(float(score), 6) if rounded else float(score),
            }
        )
    return results
