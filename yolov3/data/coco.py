"""COCO detection: an instances JSON read with pycocotools, category ids mapped to contiguous labels.

Labels follow the sorted category ids: the smallest id is label 0. ``label_to_category_id`` and
``category_id_to_label`` convert both ways (results JSON for ``COCOeval`` needs the category ids).
Crowd regions (``iscrowd=1``) are left out of training samples; with ``include_crowd=True`` (evaluation)
they are kept and flagged in ``sample.iscrowd``. COCO boxes are ``[x, y, width, height]`` in pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torchvision.ops import box_convert
from tqdm import tqdm

from yolov3.data.bad_data import BadDataError, BadDataPolicy
from yolov3.data.detection_dataset import MAX_IMAGE_SIDE, DetectionDataset, ImageRecord

LOGGER = logging.getLogger(__name__)


# For each section: the keys pycocotools indexes an entry by (integers), and the other keys this reader needs.
ENTRY_KEYS = {
    "images": (("id",), ("file_name", "height", "width")),
    "annotations": (("id", "image_id", "category_id"), ()),
    "categories": (("id",), ("name",)),
}
MAX_ID = 2**63 - 1  # ids are stored as int64


def load_coco(annotation_file: str | os.PathLike, bad_data: BadDataPolicy | None = None) -> COCO:
    """pycocotools ``COCO`` of a checked instances file; its progress prints go to the log.

    A file that is not JSON, not an object or whose ``images`` / ``annotations`` / ``categories`` are not lists
    raises :class:`BadDataError` under either policy. An entry pycocotools cannot index (not an object, an ``id``
    that is not an integer; an image without a file name or a positive size; a category without a name) is a
    ``malformed_label`` problem: left out under ``skip``.
    """
    path = Path(annotation_file)
    bad_data = bad_data or BadDataPolicy()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_bytes())
    except OSError as error:
        raise BadDataError("malformed_label", f"{path}: cannot read ({error.strerror or error})") from error
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadDataError("malformed_label", f"{path}: not a COCO instances file: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise BadDataError(
            "malformed_label",
            f"{path}: not a COCO instances file: the top level is a {type(data).__name__}; expected an object "
            "with images, annotations and categories",
        )
    for section in ENTRY_KEYS:
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise BadDataError(
                "malformed_label", f"{path}: {section} is a {type(entries).__name__}; expected a list of objects"
            )
        data[section] = [
            entry for index, entry in enumerate(entries) if _entry_ok(path, section, index, entry, bad_data)
        ]
    coco = COCO()
    coco.dataset = data
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco.createIndex()
    LOGGER.debug("%s", printed.getvalue().strip())
    return coco


def _entry_ok(path: Path, section: str, index: int, entry: object, bad_data: BadDataPolicy) -> bool:
    """Whether ``data[section][index]`` can be indexed and read; a problem is reported when it cannot."""
    ids, fields = ENTRY_KEYS[section]
    where = f"{path}: {section}[{index}]"
    if not isinstance(entry, dict):
        bad_data.problem("malformed_label", f"{where} is {_short(entry)}; expected an object")
        return False
    for key in (*ids, *fields):
        value = entry.get(key)
        if key in ids:
            valid, expected = _is_integer(value, -MAX_ID, MAX_ID), "an integer"
        elif key in ("height", "width"):
            valid, expected = _is_integer(value, 1, MAX_IMAGE_SIDE), f"an integer in 1..{MAX_IMAGE_SIDE:,}"
        else:
            valid, expected = isinstance(value, str) and value != "", "a non-empty string"
        if not valid:
            bad_data.problem("malformed_label", f"{where}: {key} is {_short(value)}; expected {expected}")
            return False
    return True


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_integer(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


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
        self.coco = load_coco(self.annotation_file, bad_data)
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
            elif _box(annotation.get("bbox")) is None:
                bad_data.problem(
                    "malformed_label",
                    f"{location.format(annotation.get('id'))}: bbox {annotation.get('bbox')!r}; "
                    "expected [x, y, width, height] numbers",
                )
            else:
                known.append(annotation)
        boxes_xywh = torch.tensor([_box(a["bbox"]) for a in known], dtype=torch.float64)
        boxes_xywh = boxes_xywh.reshape(-1, 4)  # (M, 4) x, y, w, h
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


def _box(value: object) -> list[float] | None:
    """``[x, y, width, height]`` as floats (infinite where a huge integer overflows), or None if not 4 numbers."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return [float(v) if isinstance(v, float) or abs(v) < 2**1000 else math.copysign(math.inf, v) for v in value]
