"""A synthetic shapes detection dataset, written as COCO JSON, Pascal VOC XML and YOLO txt.

Deterministic by seed: image ``i`` of a split depends only on ``(seed, split, i)``. The layout under ``root``::

    images/{train,val}/000000.png          the images (PNG, lossless)
    labels/{train,val}/000000.txt          YOLO txt (class cx cy w h, normalized)
    data.yaml                              YOLO dataset YAML (path, train, val, names)
    annotations/instances_{train,val}.json COCO (file_name relative to images/, category ids 1..C)
    voc/Annotations, voc/JPEGImages, voc/ImageSets/Main/{train,val}.txt   Pascal VOC (1-based pixels)
    synthetic.json                         marker: the generator version and options

:func:`ensure_shapes_dataset` reuses a dataset whose marker matches the options and regenerates otherwise
(``python -m yolov3.data.synthetic --out data/shapes --num-train 512 --num-val 128 --image-size 256``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from yolov3.config_loading import to_dict
from yolov3.data.shapes import SceneOptions, draw_scene

LOGGER = logging.getLogger(__name__)

SyntheticFormat = Literal["coco", "voc", "yolo"]
SYNTHETIC_FORMATS: tuple[SyntheticFormat, ...] = ("coco", "voc", "yolo")
SPLITS = ("train", "val")
GENERATOR_VERSION = 1
MARKER_NAME = "synthetic.json"
GENERATED_ENTRIES = ("images", "labels", "annotations", "voc", "data.yaml")
# Fast PNG writing: noisy scenes barely compress, and run-length coding is several times faster than zlib.
PNG_SETTINGS = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)


@dataclass(frozen=True)
class SyntheticOptions:
    """What to generate. ``image_size`` is (height, width); with ``min_image_size`` each image's size is
    drawn uniformly between the two. Object sizes are fractions of the shorter image side."""

    num_train: int = 256
    num_val: int = 64
    image_size: tuple[int, int] = (256, 256)
    min_image_size: tuple[int, int] | None = None
    classes: tuple[str, ...] = ("circle", "square", "triangle")
    min_objects: int = 1
    max_objects: int = 6
    object_size_range: tuple[float, float] = (0.08, 0.45)
    aspect_range: tuple[float, float] = (0.6, 1.6)
    max_occlusion: float = 0.4
    background: Literal["textured", "plain"] = "textured"
    seed: int = 0
    formats: tuple[SyntheticFormat, ...] = SYNTHETIC_FORMATS
    read_as: SyntheticFormat = "coco"  # which written format build_dataset reads (not part of the marker)

    def __post_init__(self) -> None:
        if self.num_train < 0 or self.num_val < 0:
            raise ValueError(f"num_train and num_val must be >= 0, got {self.num_train}, {self.num_val}")
        smallest = self.min_image_size or self.image_size
        if min(smallest) < 16 or any(low > high for low, high in zip(smallest, self.image_size, strict=True)):
            raise ValueError(f"image sizes must be >= 16 and min_image_size <= image_size, got {self.image_size}")
        unknown = [name for name in self.formats if name not in SYNTHETIC_FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"formats must be among {', '.join(SYNTHETIC_FORMATS)}, got {self.formats}")
        if self.read_as not in self.formats:
            raise ValueError(f"read_as {self.read_as!r} must be one of the written formats {self.formats}")
        self.scene_options()  # validates the drawing options

    def scene_options(self) -> SceneOptions:
        return SceneOptions(
            classes=self.classes,
            min_objects=self.min_objects,
            max_objects=self.max_objects,
            object_size_range=self.object_size_range,
            aspect_range=self.aspect_range,
            max_occlusion=self.max_occlusion,
            background=self.background,
        )


@dataclass(frozen=True)
class SyntheticLayout:
    """Where each format lives under a generated ``root``."""

    root: Path

    def images_dir(self, split: str) -> Path:
        return self.root / "images" / split

    def labels_dir(self, split: str) -> Path:
        return self.root / "labels" / split

    def coco_annotation_file(self, split: str) -> Path:
        return self.root / "annotations" / f"instances_{split}.json"

    @property
    def coco_images_dir(self) -> Path:
        return self.root / "images"

    @property
    def voc_root(self) -> Path:
        return self.root / "voc"

    @property
    def yolo_yaml(self) -> Path:
        return self.root / "data.yaml"

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME


def _marker_content(options: SyntheticOptions, complete: bool) -> dict[str, Any]:
    parameters = to_dict(options)
    parameters.pop("read_as")
    return {"generator_version": GENERATOR_VERSION, "options": parameters, "complete": complete}


def _image_size(rng: np.random.Generator, options: SyntheticOptions) -> tuple[int, int]:
    if options.min_image_size is None:
        return options.image_size
    height = int(rng.integers(options.min_image_size[0], options.image_size[0] + 1))
    width = int(rng.integers(options.min_image_size[1], options.image_size[1] + 1))
    return height, width


def _write_png(path: Path, image_rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), PNG_SETTINGS)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise OSError(f"{path}: PNG encoding failed")
    encoded.tofile(path)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _yolo_lines(boxes: np.ndarray, labels: list[int], size: tuple[int, int]) -> str:
    height, width = size
    lines = []
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels, strict=True):
        center_x, center_y = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{label} {center_x:.6f} {center_y:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}\n")
    return "".join(lines)


def _voc_xml(filename: str, boxes: np.ndarray, names: list[str], size: tuple[int, int]) -> bytes:
    """VOC XML with 1-based inclusive pixel corners: xmin = x1 + 1, xmax = x2 for x2 exclusive 0-based."""
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "voc"
    ET.SubElement(annotation, "filename").text = filename
    size_element = ET.SubElement(annotation, "size")
    for key, value in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ET.SubElement(size_element, key).text = str(value)
    for (x1, y1, x2, y2), name in zip(boxes.astype(int).tolist(), names, strict=True):
        element = ET.SubElement(annotation, "object")
        ET.SubElement(element, "name").text = name
        ET.SubElement(element, "truncated").text = "0"
        ET.SubElement(element, "difficult").text = "0"
        box = ET.SubElement(element, "bndbox")
        for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, key).text = str(value)
    ET.indent(annotation)
    return ET.tostring(annotation, encoding="utf-8")


def _write_split(layout: SyntheticLayout, split: str, count: int, options: SyntheticOptions, progress: bool) -> None:
    images_dir = layout.images_dir(split)
    images_dir.mkdir(parents=True, exist_ok=True)
    if "yolo" in options.formats:
        layout.labels_dir(split).mkdir(parents=True, exist_ok=True)
    if "voc" in options.formats:
        for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (layout.voc_root / folder).mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": index + 1, "name": name, "supercategory": "shape"} for index, name in enumerate(options.classes)
    ]
    coco: dict[str, Any] = {"info": {"description": "yolov3 synthetic shapes"}, "images": [], "annotations": []}
    coco["categories"] = categories
    scene = options.scene_options()
    voc_ids = []
    for index in tqdm(range(count), desc=f"shapes {split}", unit="image", disable=not progress, leave=False):
        rng = np.random.default_rng([options.seed, SPLITS.index(split), index])
        size = _image_size(rng, options)
        image, objects = draw_scene(rng, size, scene)
        stem = f"{index:06d}"
        image_path = images_dir / f"{stem}.png"
        _write_png(image_path, image)
        boxes = np.array([drawn.box_xyxy for drawn in objects], dtype=np.float64).reshape(-1, 4)  # (M, 4) xyxy
        labels = [drawn.label for drawn in objects]
        if "yolo" in options.formats:
            (layout.labels_dir(split) / f"{stem}.txt").write_text(_yolo_lines(boxes, labels, size))
        if "voc" in options.formats:
            voc_id = f"{split}_{stem}"
            voc_ids.append(voc_id)
            _link_or_copy(image_path, layout.voc_root / "JPEGImages" / f"{voc_id}.png")
            names = [options.classes[label] for label in labels]
            xml = _voc_xml(f"{voc_id}.png", boxes, names, size)
            (layout.voc_root / "Annotations" / f"{voc_id}.xml").write_bytes(xml)
        image_id = index + 1
        coco["images"].append({"id": image_id, "file_name": f"{split}/{stem}.png", "height": size[0], "width": size[1]})
        for drawn in objects:
            x1, y1, x2, y2 = drawn.box_xyxy
            annotation = {"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": drawn.label + 1}
            annotation.update({"bbox": [x1, y1, x2 - x1, y2 - y1], "area": drawn.area, "iscrowd": 0})
            coco["annotations"].append(annotation)
    if "coco" in options.formats:
        layout.coco_annotation_file(split).parent.mkdir(parents=True, exist_ok=True)
        layout.coco_annotation_file(split).write_text(json.dumps(coco))
    if "voc" in options.formats:
        (layout.voc_root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in voc_ids))


def write_shapes_dataset(root: str | os.PathLike, options: SyntheticOptions, progress: bool = True) -> SyntheticLayout:
    """Generate the dataset under ``root``, replacing an earlier generated one (never other files).

    Raises ``FileExistsError`` when ``root`` holds generator outputs without a marker (not ours).
    """
    layout = SyntheticLayout(Path(root))
    existing = [name for name in GENERATED_ENTRIES if (layout.root / name).exists()]
    if existing and not layout.marker.is_file():
        raise FileExistsError(
            f"{layout.root} already holds {', '.join(existing)} but no {MARKER_NAME} marker: it was not written "
            "by the synthetic generator; choose another folder or remove them"
        )
    for name in existing:
        path = layout.root / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.marker.write_text(json.dumps(_marker_content(options, complete=False), indent=2))
    for split, count in zip(SPLITS, (options.num_train, options.num_val), strict=True):
        _write_split(layout, split, count, options, progress)
    if "yolo" in options.formats:
        data = {"path": ".", "train": "images/train", "val": "images/val", "names": list(options.classes)}
        layout.yolo_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    layout.marker.write_text(json.dumps(_marker_content(options, complete=True), indent=2))
    LOGGER.info("wrote %d + %d synthetic images to %s", options.num_train, options.num_val, layout.root)
    return layout


def ensure_shapes_dataset(root: str | os.PathLike, options: SyntheticOptions, progress: bool = True) -> SyntheticLayout:
    """The dataset under ``root``: reused when its marker matches ``options``, generated otherwise."""
    layout = SyntheticLayout(Path(root))
    if layout.marker.is_file():
        try:
            marker = json.loads(layout.marker.read_text())
        except (OSError, json.JSONDecodeError):
            marker = None
        if marker == json.loads(json.dumps(_marker_content(options, complete=True))):
            LOGGER.debug("reusing the synthetic dataset in %s", layout.root)
            return layout
        LOGGER.info("synthetic dataset in %s was made with other options; regenerating", layout.root)
    return write_shapes_dataset(root, options, progress)


def generate_shapes_dataset(
    root: str | os.PathLike,
    num_train: int,
    num_val: int,
    image_size: tuple[int, int] = (256, 256),
    classes: tuple[str, ...] = ("circle", "square", "triangle"),
    seed: int = 0,
    formats: tuple[SyntheticFormat, ...] = SYNTHETIC_FORMATS,
    progress: bool = True,
    **options: Any,
) -> SyntheticLayout:
    """Generate (always, replacing an earlier generated dataset) and return the layout.

    Further keyword arguments are :class:`SyntheticOptions` fields (``min_objects``, ``background``, ...).
    """
    height, width = image_size  # a list from a config file or the command line works too
    settings = SyntheticOptions(
        num_train=num_train,
        num_val=num_val,
        image_size=(height, width),
        classes=tuple(classes),
        seed=seed,
        formats=tuple(formats),
        read_as=options.pop("read_as", formats[0]),
        **options,
    )
    return write_shapes_dataset(root, settings, progress)
