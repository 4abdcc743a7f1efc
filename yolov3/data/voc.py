"""Pascal VOC detection: ``Annotations/<id>.xml`` listed by ``ImageSets/Main/<image set>.txt``, one or more years.

A split is a list of ``(year root, image set)`` pairs, e.g. VOC2007 trainval + VOC2012 trainval for
training and VOC2007 test for evaluation. VOC corners are 1-based inclusive pixel indices; they become
0-based continuous ``xyxy`` as ``(xmin - 1, ymin - 1, xmax, ymax)``, so a box covering pixels 1..10 is
10 pixels wide. Objects marked ``difficult`` are kept with ``difficult=True`` (VOC evaluation ignores
them) unless ``drop_difficult`` is set.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from yolov3.data.bad_data import BadDataPolicy
from yolov3.data.detection_dataset import MAX_IMAGE_SIDE, DetectionDataset, ImageRecord, read_image_size
from yolov3.data.image_io import ImageReadError

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


class VocDataset(DetectionDataset):
    """The images of every ``(year_root, image_set)`` in ``sets``, in order; ``image_id`` is the index."""

    def __init__(
        self,
        sets: Sequence[tuple[str | os.PathLike, str]],
        class_names: tuple[str, ...] = VOC_CLASSES,
        drop_difficult: bool = False,
        bad_data: BadDataPolicy | None = None,
        progress: bool = True,
    ) -> None:
        bad_data = bad_data or BadDataPolicy()
        self.drop_difficult = drop_difficult
        self._class_index = {name: index for index, name in enumerate(class_names)}
        entries = []
        for year_root, image_set in sets:
            list_file = Path(year_root) / "ImageSets" / "Main" / f"{image_set}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(f"{list_file}: VOC image set not found")
            text = list_file.read_text(errors="surrogateescape")  # ids as the file system spells them
            ids = [line.split()[0] for line in text.splitlines() if line.strip()]
            entries += [(Path(year_root), image_id) for image_id in ids]
        records: list[ImageRecord] = []
        for year_root, name in tqdm(entries, desc="scan VOC", disable=not progress):
            record = self._scan_image(year_root, name, len(records), bad_data)
            if record is not None:
                records.append(record)
        source = " + ".join(f"{Path(root).name}/{image_set}" for root, image_set in sets)
        super().__init__(records, class_names, bad_data, source)
        bad_data.log_summary(source)

    def _scan_image(self, year_root: Path, name: str, image_id: int, bad_data: BadDataPolicy) -> ImageRecord | None:
        xml_path = year_root / "Annotations" / f"{name}.xml"
        try:
            root = ET.parse(xml_path).getroot()
        except (OSError, ValueError) as error:  # ValueError: a NUL in the id, a multi-byte encoding
            reason = getattr(error, "strerror", None) or error
            bad_data.problem("malformed_label", f"{xml_path}: cannot read ({reason}); image skipped")
            return None
        except (ET.ParseError, LookupError) as error:  # LookupError: an unknown encoding in the declaration
            bad_data.problem("malformed_label", f"{xml_path}: not valid XML ({error}); image skipped")
            return None
        image_path = find_voc_image(year_root, name)
        filename = (root.findtext("filename") or "").strip()
        if filename and Path(filename).stem != name:
            bad_data.fixed(
                "filename_mismatch",
                f"{xml_path}: <filename> {filename!r} disagrees with the annotation id {name!r}; "
                f"using {image_path} (JPEGImages/<id>.<suffix>, the VOC devkit's rule)",
            )
        try:
            size = _size(root) or read_image_size(image_path)
        except ImageReadError as error:
            bad_data.image_problem(error)
            return None
        boxes, labels, difficult, numbers = [], [], [], []
        for number, element in enumerate(root.iter("object"), start=1):
            where = f"{xml_path}, object {number}"
            class_name = (element.findtext("name") or "").strip()
            if class_name not in self._class_index:
                bad_data.problem(
                    "unknown_class", f"{where}: class {class_name!r} is not one of {list(self._class_index)}"
                )
                continue
            corners = [element.findtext(f"bndbox/{key}") for key in BOX_KEYS]
            try:
                xmin, ymin, xmax, ymax = (_float(value) for value in corners)
            except (TypeError, ValueError):
                bad_data.problem(
                    "malformed_label", f"{where}: bndbox {dict(zip(BOX_KEYS, corners, strict=True))}; expected numbers"
                )
                continue
            is_difficult = (element.findtext("difficult") or "0").strip() == "1"
            if is_difficult and self.drop_difficult:
                continue
            boxes.append((xmin - 1, ymin - 1, xmax, ymax))
            labels.append(self._class_index[class_name])
            difficult.append(is_difficult)
            numbers.append(number)
        boxes_array = np.array(boxes, dtype=np.float64).reshape(-1, 4)  # (M, 4) xyxy
        boxes_array, keep = bad_data.check_boxes(
            boxes_array, size, lambda index: f"{xml_path}, object {numbers[index]}"
        )
        return ImageRecord(
            path=image_path,
            image_id=image_id,
            size=size,
            boxes_xyxy=boxes_array[keep],
            labels=np.array(labels, dtype=np.int64)[keep],
            difficult=np.array(difficult, dtype=bool)[keep],
        )


def find_voc_image(year_root: Path, name: str) -> Path:
    """``JPEGImages/<name>.<suffix>`` for the first of :data:`IMAGE_SUFFIXES` that exists, else the ``.jpg`` path.

    The XML's ``<filename>`` is not used: annotation tools leave it stale after a rename or copy, and the VOC
    devkit and torchvision's ``VOCDetection`` pair ``Annotations/<id>.xml`` with ``JPEGImages/<id>.jpg``.
    A missing image is then reported by the image reader as ``unreadable_image`` naming the ``.jpg`` path.
    """
    folder = year_root / "JPEGImages"
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{name}.jpg"


def _float(text: str | None) -> float:
    """``float(text)``; a missing element (``None``) raises TypeError, as ``float(None)`` does."""
    if text is None:
        raise TypeError("no value")
    return float(text)


def _size(root: ET.Element) -> tuple[int, int] | None:
    """(height, width) from ``<size>``, or None when missing, zero (some VOC files have 0x0) or not a size."""
    try:
        height, width = int(_float(root.findtext("size/height"))), int(_float(root.findtext("size/width")))
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf
        return None
    return (height, width) if 0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE else None
