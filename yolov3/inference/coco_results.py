"""Detections as COCO results (``{image_id, category_id, bbox [x, y, w, h], score}``): the one converter, used by
validation, ``evaluate --data`` and ``detect --save-json``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


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
