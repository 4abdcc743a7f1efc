"""YOLO txt labels: one ``.txt`` per image with ``class cx cy w h`` lines, normalized to 0..1.

The label of ``.../images/<split>/a.jpg`` is ``.../labels/<split>/a.txt`` (the last ``images`` folder in
the path becomes ``labels``), unless a labels folder is given. A missing or empty label file is an image
without objects. Lines with more than five fields are polygons (``class x1 y1 x2 y2 ...``, as segmentation
datasets write them) and become their bounding box. ``images`` may be a folder (searched recursively) or a
``.txt`` file listing image paths (relative ones are relative to that file's folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert
from tqdm import tqdm

from yolov3.data.bad_data import BadDataPolicy
from yolov3.data.detection_dataset import DetectionDataset, ImageRecord, read_image_size
from yolov3.data.image_io import IMAGE_SUFFIXES, ImageReadError


def find_images(images: str | os.PathLike) -> list[Path]:
    """Image files in a folder (recursively, sorted) or listed in a ``.txt`` file."""
    images = Path(images)
    if images.is_dir():
        return sorted(path for path in images.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if images.is_file() and images.suffix == ".txt":
        text = images.read_text(errors="surrogateescape")  # paths as the file system spells them
        listed = [line.strip() for line in text.splitlines() if line.strip()]
        return [path if path.is_absolute() else images.parent / path for path in map(Path, listed)]
    raise FileNotFoundError(f"{images}: expected a folder of images or a .txt list of image paths")


def label_path_for(image_path: Path, images_root: Path | None = None, labels_dir: Path | None = None) -> Path:
    """The label file of an image: ``labels_dir`` mirroring ``images_root``, else the ``images`` -> ``labels`` rule."""
    if labels_dir is not None and images_root is not None:
        return (labels_dir / image_path.relative_to(images_root)).with_suffix(".txt")
    parts = list(image_path.parts)
    if "images" not in parts:
        raise ValueError(f"{image_path}: no 'images' folder in the path to derive its labels folder from")
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


class YoloTxtDataset(DetectionDataset):
    """Images under ``images`` with YOLO txt labels; ``image_id`` is the index."""

    def __init__(
        self,
        images: str | os.PathLike,
        class_names: tuple[str, ...],
        labels_dir: str | os.PathLike | None = None,
        bad_data: BadDataPolicy | None = None,
        progress: bool = True,
    ) -> None:
        if not class_names:
            raise ValueError(f"{images}: YOLO txt datasets need class names")
        bad_data = bad_data or BadDataPolicy()
        images = Path(images)
        images_root = images if images.is_dir() else None
        labels = Path(labels_dir) if labels_dir is not None else None
        if labels is not None and images_root is None:
            raise ValueError(f"{images}: a labels folder can only be given with an images folder")
        self.num_label_files = 0
        records: list[ImageRecord] = []
        for image_path in tqdm(find_images(images), desc=f"scan {images.name}", disable=not progress):
            try:
                size = read_image_size(image_path)
            except ImageReadError as error:
                bad_data.image_problem(error)
                continue
            label_path = label_path_for(image_path, images_root, labels)
            read = self._read_labels(label_path, size, len(class_names), bad_data)
            if read is not None:
                records.append(ImageRecord(image_path, len(records), size, *read))
        super().__init__(records, class_names, bad_data, str(images))
        bad_data.log_summary(str(images))

    def _read_labels(
        self, label_path: Path, size: tuple[int, int], num_classes: int, bad_data: BadDataPolicy
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(boxes, labels) of one image; None when its label file cannot be read (the image is skipped)."""
        if not label_path.is_file():
            return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64)
        self.num_label_files += 1
        try:  # a BOM is dropped, a bad byte fails its line
            text = label_path.read_text(encoding="utf-8-sig", errors="replace")
        except OSError as error:
            bad_data.problem("malformed_label", f"{label_path}: cannot read ({error.strerror or error}); image skipped")
            return None
        boxes, labels, line_numbers = [], [], []
        for line_number, line in enumerate(text.splitlines(), start=1):
            parsed = _parse_line(line, f"{label_path}:{line_number}", num_classes, bad_data)
            if parsed is not None:
                labels.append(parsed[0])
                boxes.append(parsed[1])
                line_numbers.append(line_number)
        height, width = size
        normalized = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)  # (M, 4) cx, cy, w, h in 0..1
        pixels = box_convert(normalized, "cxcywh", "xyxy").numpy() * [width, height, width, height]
        pixels, keep = bad_data.check_boxes(pixels, size, lambda index: f"{label_path}:{line_numbers[index]}")
        return pixels[keep], np.array(labels, dtype=np.int64)[keep]


def _parse_line(
    line: str, where: str, num_classes: int, bad_data: BadDataPolicy
) -> tuple[int, tuple[float, float, float, float]] | None:
    """(class, (cx, cy, w, h)) of one label line, None for a blank or bad line (reported)."""
    fields = line.split()
    if not fields:
        return None
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        bad_data.problem(
            "malformed_label",
            f"{where}: {len(fields)} fields in {line.strip()!r}; expected 'class cx cy w h' or a polygon "
            "'class x1 y1 x2 y2 x3 y3 ...'",
        )
        return None
    try:
        values = [float(field) for field in fields]
    except ValueError:
        bad_data.problem("malformed_label", f"{where}: {line.strip()!r} is not all numbers")
        return None
    if not values[0].is_integer():
        bad_data.problem("malformed_label", f"{where}: class {fields[0]!r} is not an integer")
        return None
    class_index = int(values[0])
    if not 0 <= class_index < num_classes:
        bad_data.problem("unknown_class", f"{where}: class {class_index} is outside 0..{num_classes - 1}")
        return None
    if len(values) == 5:
        return class_index, (values[1], values[2], values[3], values[4])
    points = np.array(values[1:]).reshape(-1, 2)  # (P, 2) normalized x, y
    (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
    return class_index, ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
