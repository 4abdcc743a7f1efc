"""A dataset's annotations as COCO-format ground truth, for :func:`~yolov3.evaluation.coco.evaluate_coco`
(detections become COCO results through :func:`yolov3.inference.coco_results.coco_detections`).

Category ids are the dataset's contiguous labels (0..C-1), so detections use ``category_id = label``.
Crowd and difficult boxes are kept with their flags: COCO ignores ``iscrowd``, VOC ignores ``difficult``.
"""

from __future__ import annotations

from typing import Any, Protocol


class AnnotatedDataset(Protocol):
    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def record(self, index: int) -> Any: ...


def coco_ground_truth(dataset: AnnotatedDataset) -> dict[str, Any]:
    """COCO instances dict of every image of ``dataset`` (no pixels are read)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
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
