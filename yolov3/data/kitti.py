"""KITTI-style labels: one ``.txt`` per image, ``type truncated occluded alpha x1 y1 x2 y2 ...`` per line.

Only the class name and the 2D box (pixels, ``xyxy``) are used; the 3D fields after them are optional.
Classes in ``ignore_classes`` (``DontCare`` by default) are skipped silently; any other name that is not
in ``class_names`` is an ``unknown_class`` problem. Labels are ``labels_dir/<image stem>.txt``; a missing
label file is an image without objects. An optional list file restricts the images to the stems it lists.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from yolov3.data.bad_data import BadDataPolicy
from yolov3.data.detection_dataset import DetectionDataset, ImageRecord, read_image_size
from yolov3.data.image_io import ImageReadError, list_images

KITTI_BOX_FIELDS = slice(4, 8)  # x1 y1 x2 y2 after type, truncated, occluded, alpha
MIN_FIELDS = 8


class KittiDataset(DetectionDataset):
    """Images in ``images_dir`` with KITTI label files in ``labels_dir``; ``image_id`` is the index."""

    def __init__(
        self,
        images_dir: str | os.PathLike,
        labels_dir: str | os.PathLike,
        class_names: tuple[str, ...],
        list_file: str | os.PathLike | None = None,
        ignore_classes: tuple[str, ...] = ("DontCare",),
        bad_data: BadDataPolicy | None = None,
        progress: bool = True,
    ) -> None:
        if not class_names:
            raise ValueError(f"{labels_dir}: KITTI datasets need class names")
        bad_data = bad_data or BadDataPolicy()
        self.images_dir, self.labels_dir = Path(images_dir), Path(labels_dir)
        self.ignore_classes = tuple(ignore_classes)
        self._class_index = {name: index for index, name in enumerate(class_names)}
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"{self.images_dir}: KITTI images folder not found")
        image_paths = list_images(self.images_dir)
        if list_file is not None:
            text = Path(list_file).read_text(errors="surrogateescape")  # stems as the file system spells them
            wanted = {line.strip() for line in text.splitlines() if line.strip()}
            image_paths = [path for path in image_paths if path.stem in wanted]
            missing = wanted - {path.stem for path in image_paths}
            for stem in sorted(missing):
                bad_data.image_problem(ImageReadError(self.images_dir / stem, f"listed in {list_file} but not found"))
        records: list[ImageRecord] = []
        for image_path in tqdm(image_paths, desc=f"scan {self.labels_dir.name}", disable=not progress):
            try:
                size = read_image_size(image_path)
            except ImageReadError as error:
                bad_data.image_problem(error)
                continue
            read = self._read_labels(self.labels_dir / f"{image_path.stem}.txt", size, bad_data)
            if read is not None:
                records.append(ImageRecord(image_path, len(records), size, *read))
        super().__init__(records, class_names, bad_data, str(self.labels_dir))
        bad_data.log_summary(str(self.labels_dir))

    def _read_labels(
        self, label_path: Path, size: tuple[int, int], bad_data: BadDataPolicy
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(boxes, labels) of one image; None when its label file cannot be read (the image is skipped)."""
        boxes, labels, line_numbers = [], [], []
        try:  # a BOM is dropped, a bad byte fails its line
            text = label_path.read_text(encoding="utf-8-sig", errors="replace") if label_path.is_file() else ""
        except OSError as error:
            bad_data.problem("malformed_label", f"{label_path}: cannot read ({error.strerror or error}); image skipped")
            return None
        for line_number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            where = f"{label_path}:{line_number}"
            if not fields or fields[0] in self.ignore_classes:
                continue
            if len(fields) < MIN_FIELDS:
                bad_data.problem(
                    "malformed_label",
                    f"{where}: {len(fields)} fields in {line.strip()!r}; expected at least "
                    "'type truncated occluded alpha x1 y1 x2 y2'",
                )
                continue
            try:
                box = [float(value) for value in fields[KITTI_BOX_FIELDS]]
            except ValueError:
                bad_data.problem("malformed_label", f"{where}: box {fields[KITTI_BOX_FIELDS]} is not all numbers")
                continue
            if fields[0] not in self._class_index:
                bad_data.problem(
                    "unknown_class",
                    f"{where}: class {fields[0]!r} is not one of {list(self._class_index)} "
                    f"(ignored classes: {list(self.ignore_classes)})",
                )
                continue
            boxes.append(box)
            labels.append(self._class_index[fields[0]])
            line_numbers.append(line_number)
        boxes_array = np.array(boxes, dtype=np.float64).reshape(-1, 4)  # (M, 4) xyxy
        boxes_array, keep = bad_data.check_boxes(boxes_array, size, lambda index: f"{label_path}:{line_numbers[index]}")
        return boxes_array[keep], np.array(labels, dtype=np.int64)[keep]
