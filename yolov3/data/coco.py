"""COCO detection: an instances JSON read with pycocotools, category ids mapped to contiguous labels.

Labels follow the sorted category ids: the smallest id is label 0. ``label_to_category_id`` and
``category_id_to_label`` convert both ways (results JSON for ``COCOeval`` needs the category ids).
Crowd regions (``iscrowd=1``) are left out of training samples; with ``include_crowd=True`` (evaluation)
they are kept and flagged in ``sample.iscrowd``. COCO boxes are ``[x, y, width, height]`` in pixels.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torchvision.ops import box_convert
from tqdm import tqdm

from yolov3.data.bad_data import BadDataPolicy
from yolov3.data.detection_dataset import DetectionDataset, ImageRecord

LOGGER = logging.getLogger(__name__)


def load_coco(annotation_file: str | os.PathLike) -> COCO:
    """pycocotools ``COCO`` with its progress prints sent to the log; errors name the file."""
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO annotation file not found")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            coco = COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise ValueError(f"{path}: not a COCO instances file ({type(error).__name__}: {error})") from error
    LOGGER.debug("%s", printed.getvalue().strip())
    return coco


class CocoDataset(DetectionDataset):
    """Images under ``images_dir`` (``file_name`` is relative to it) annotated by ``annotation_file``."""

    def __init__(
        self,
        images_dir: str | os.PathLike,
        annotation_file: str | os.PathLike,
        include_crowd: bool = False,
        bad_data: BadDataPolicy | None = None,
        progress: bool = True,
    ) -> None:
        bad_data = bad_data or BadDataPolicy()
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.include_crowd = include_crowd
        self.coco = load_coco(self.annotation_file)
        categories = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda category: category["id"])
        self.label_to_category_id: tuple[int, ...] = tuple(int(category["id"]) for category in categories)
        self.category_id_to_label: dict[int, int] = {cid: label for label, cid in enumerate(self.label_to_category_id)}
        class_names = tuple(str(category["name"]) for category in categories)
        records = [
            self._scan_image(image_id, bad_data)
            for image_id in tqdm(
                sorted(self.coco.getImgIds()), desc=f"scan {self.annotation_file.name}", disable=not progress
            )
        ]
        super().__init__(records, class_names, bad_data, str(self.annotation_file))
        bad_data.log_summary(str(self.annotation_file))

    def _scan_image(self, image_id: int, bad_data: BadDataPolicy) -> ImageRecord:
        info = self.coco.imgs[image_id]
        size = (int(info["height"]), int(info["width"]))
        annotations = self.coco.imgToAnns.get(image_id, [])
        if not self.include_crowd:
            annotations = [a for a in annotations if not a.get("iscrowd", 0)]
        location = f"{self.annotation_file} (image id {image_id}, annotation id {{}})"
        known = []
        for annotation in annotations:
            if annotation.get("category_id") not in self.category_id_to_label:
                bad_data.problem(
                    "unknown_class",
                    f"{location.format(annotation.get('id'))}: category_id {annotation.get('category_id')!r} "
                    f"is not in the categories {list(self.label_to_category_id)}",
                )
            elif not _is_box(annotation.get("bbox")):
                bad_data.problem(
                    "malformed_label",
                    f"{location.format(annotation.get('id'))}: bbox {annotation.get('bbox')!r}; "
                    "expected [x, y, width, height] numbers",
                )
            else:
                known.append(annotation)
        boxes_xywh = torch.tensor([a["bbox"] for a in known], dtype=torch.float64).reshape(-1, 4)  # (M, 4) x, y, w, h
        boxes = box_convert(boxes_xywh, "xywh", "xyxy").numpy()
        boxes, keep = bad_data.check_boxes(boxes, size, lambda index: location.format(known[index].get("id")))
        labels = np.array([self.category_id_to_label[a["category_id"]] for a in known], dtype=np.int64)
        iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in known], dtype=bool)
        return ImageRecord(
            path=self.images_dir / info["file_name"],
            image_id=int(image_id),
            size=size,
            boxes_xyxy=boxes[keep],
            labels=labels[keep],
            iscrowd=iscrowd[keep],
        )


def _is_box(value: object) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
