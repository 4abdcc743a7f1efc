"""Dataset configuration: which format, where it lives, class names, and building the train/val datasets.

A dataset YAML (paths relative to ``root``; a relative ``root`` is relative to the YAML file's folder)::

    format: coco                      # coco | voc | yolo | kitti | synthetic
    root: /data/coco
    train: {images: train2017, annotations: annotations/instances_train2017.json}
    val: {images: val2017, annotations: annotations/instances_val2017.json}
    bad_data: skip                    # skip (count and log) | raise

    format: voc
    root: /data/VOCdevkit
    train: {sets: [VOC2007/trainval, VOC2012/trainval]}   # <year folder>/<ImageSets/Main list>
    val: {sets: [VOC2007/test]}

    format: kitti
    root: /data/kitti
    train: {images: training/image_2, labels: training/label_2, list_file: train.txt}
    names: [Car, Pedestrian, Cyclist]

    format: synthetic                 # generated under root on first use (see yolov3.data.shapes_dataset)
    root: data/shapes
    synthetic: {num_train: 512, num_val: 128, image_size: [256, 256], seed: 0}

YOLO datasets use the usual small YAML; ``format`` defaults to ``yolo`` when it has ``path``, a split may
be a plain string (the images folder), ``names`` may be a list or an ``{index: name}`` mapping, and the
``download`` and ``nc`` keys are accepted (``nc`` must match ``names``)::

    path: ../datasets/shapes
    train: images/train
    val: images/val
    test: images/test                 # optional, for every format: python -m yolov3.evaluate --split test
    names: [circle, square, triangle]
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from yolov3.config_loading import ConfigError, apply_overrides, load_dataclass, load_yaml, show_value
from yolov3.data.bad_data import BadDataPolicy
from yolov3.data.coco import CocoDataset
from yolov3.data.detection_dataset import DetectionDataset
from yolov3.data.kitti import KittiDataset
from yolov3.data.shapes_dataset import SyntheticLayout, SyntheticOptions, ensure_shapes_dataset
from yolov3.data.voc import VOC_CLASSES, VocDataset
from yolov3.data.yolo_txt import YoloTxtDataset

LOGGER = logging.getLogger(__name__)

DatasetFormat = Literal["coco", "voc", "yolo", "kitti", "synthetic"]
Split = Literal["train", "val", "test"]
SPLITS = ("train", "val", "test")
YOLO_ONLY_KEYS = ("download",)


@dataclass(frozen=True)
class SplitConfig:
    """Where one split lives, relative to the dataset root; which keys apply depends on the format."""

    images: Path | None = None  # coco, yolo (folder or .txt list), kitti
    annotations: Path | None = None  # coco instances JSON
    labels: Path | None = None  # kitti (required), yolo (optional: default images/ -> labels/)
    list_file: Path | None = None  # kitti: image stems to use
    sets: tuple[str, ...] = ()  # voc: "<year folder>/<image set>", e.g. "VOC2007/trainval"


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset: format, root, splits, class names and the bad-data policy."""

    format: DatasetFormat
    root: Path
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    test: SplitConfig = field(default_factory=SplitConfig)  # optional: held out for the final report
    names: tuple[str, ...] = ()
    names_file: Path | None = None  # one class name per line, relative to root
    bad_data: Literal["skip", "raise"] = "skip"
    drop_difficult: bool = False  # voc: leave out difficult objects instead of flagging them
    ignore_classes: tuple[str, ...] = ("DontCare",)  # kitti: class names skipped silently
    synthetic: SyntheticOptions = field(default_factory=SyntheticOptions)

    def __post_init__(self) -> None:
        if self.names and self.names_file is not None:
            raise ValueError("give either names or names_file, not both")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names must be distinct, got {list(self.names)}")

    def resolve(self, relative: Path) -> Path:
        """``relative`` resolved against ``root``."""
        return relative if relative.is_absolute() else self.root / relative

    def class_names(self) -> tuple[str, ...]:
        """The configured names; VOC's 20 classes for VOC and the shapes for synthetic by default.

        COCO datasets take their names from the annotation file (empty here unless configured).
        """
        if self.names_file is not None:
            path = self.resolve(self.names_file)
            try:
                return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
            except OSError as error:
                raise ConfigError(f"{path}: cannot read the names file ({error.strerror or error})") from error
        if self.names:
            return self.names
        if self.format == "voc":
            return VOC_CLASSES
        if self.format == "synthetic":
            return self.synthetic.classes
        return ()


def _normalize_split(value: Any, dataset_format: Any) -> Any:
    if isinstance(value, (str, os.PathLike)):
        return {"sets": [str(value)]} if dataset_format == "voc" else {"images": str(value)}
    if isinstance(value, list) and dataset_format == "voc":
        return {"sets": value}
    return value


def normalize_dataset_mapping(mapping: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept the YOLO-style shorthands (``path``, string splits, ``names`` mapping, ``nc``) as DatasetConfig keys."""
    mapping = dict(mapping)
    yolo_style = "format" not in mapping and "path" in mapping
    if yolo_style:
        mapping["format"] = "yolo"
        for key in YOLO_ONLY_KEYS:
            mapping.pop(key, None)
    if "path" in mapping:
        if "root" in mapping:
            raise ConfigError(f"{source}: give either 'root' or 'path', not both")
        mapping["root"] = mapping.pop("path")
    names = mapping.get("names")
    if isinstance(names, dict):
        indices = list(names)
        integers = all(isinstance(index, int) and not isinstance(index, bool) for index in indices)
        if not integers or set(indices) != set(range(len(names))):
            raise ConfigError(
                f"{source}: names: mapping keys must be the class indices 0..{len(names) - 1}, "
                f"got {', '.join(map(show_value, indices))}"
            )
        mapping["names"] = [names[index] for index in range(len(names))]
    if "nc" in mapping:
        count = mapping.pop("nc")
        if isinstance(mapping.get("names"), list) and count != len(mapping["names"]):
            raise ConfigError(f"{source}: nc: {show_value(count)} does not match the {len(mapping['names'])} names")
    for split in SPLITS:
        if split in mapping:
            mapping[split] = _normalize_split(mapping[split], mapping.get("format"))
    return mapping


def dataset_config_from_mapping(
    mapping: dict[str, Any], source: str = "<config>", base_dir: str | os.PathLike | None = None
) -> DatasetConfig:
    """A DatasetConfig from YAML data (YOLO-style shorthands accepted); a relative root joins ``base_dir``."""
    config = load_dataclass(DatasetConfig, normalize_dataset_mapping(mapping, source), source=source)
    if base_dir is not None and not config.root.is_absolute():
        config = replace(config, root=(Path(base_dir) / config.root).resolve())
    return config


def load_dataset_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> DatasetConfig:
    """Read a dataset YAML (``yaml.safe_load``), apply ``key=value`` overrides; a relative root is relative
    to the YAML file's folder.

    A training config is accepted too: its ``data.dataset`` section is used, with a relative root taken
    from the working directory, as the trainer does.
    """
    path = Path(path)
    mapping = load_yaml(path)
    data = mapping.get("data")
    if isinstance(data, dict) and isinstance(data.get("dataset"), dict):
        return dataset_config_from_mapping(apply_overrides(data["dataset"], list(overrides)), f"{path}: data.dataset")
    mapping = apply_overrides(mapping, list(overrides))
    return dataset_config_from_mapping(mapping, str(path), base_dir=path.parent)


def _require(config: DatasetConfig, split: Split, **values: Any) -> None:
    missing = [key for key, value in values.items() if not value]
    if missing:
        raise ConfigError(f"{config.format} dataset: {split}.{missing[0]} is required (dataset root {config.root})")


def _required(config: DatasetConfig, split: Split, key: str, value: Path | None) -> Path:
    """``value``, which the format requires: as :func:`_require` for one key."""
    _require(config, split, **{key: value})
    assert value is not None  # _require raised otherwise
    return value


def build_dataset(
    config: DatasetConfig, split: Split, for_evaluation: bool = False, progress: bool = True
) -> DetectionDataset:
    """The ``split`` dataset of ``config``. ``for_evaluation`` keeps COCO crowd boxes (flagged ``iscrowd``).

    Synthetic data is generated under ``root`` first when missing or made with other options.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    policy = BadDataPolicy(config.bad_data)
    names = config.class_names()
    if config.format == "synthetic" and split == "test":
        raise ConfigError(f"synthetic dataset {config.root}: has train and val splits only, no test split")
    if config.format == "synthetic":
        return _build_synthetic(config, split, policy, for_evaluation, progress)
    paths: SplitConfig = getattr(config, split)
    if config.format == "coco":
        images = _required(config, split, "images", paths.images)
        annotations = _required(config, split, "annotations", paths.annotations)
        dataset = CocoDataset(
            config.resolve(images),
            config.resolve(annotations),
            include_crowd=for_evaluation,
            bad_data=policy,
            progress=progress,
        )
        if names and names != dataset.class_names:
            raise ConfigError(f"names {list(names)} differ from the categories of {dataset.annotation_file}")
        return dataset
    if config.format == "voc":
        _require(config, split, sets=paths.sets)
        sets = [_voc_set(config, entry) for entry in paths.sets]
        return VocDataset(sets, names, config.drop_difficult, policy, progress)
    if not names:
        raise ConfigError(f"{config.format} dataset: names (or names_file) are required (dataset root {config.root})")
    images = _required(config, split, "images", paths.images)
    if config.format == "yolo":
        labels = config.resolve(paths.labels) if paths.labels is not None else None
        return YoloTxtDataset(config.resolve(images), names, labels, policy, progress)
    kitti_labels = _required(config, split, "labels", paths.labels)
    list_file = config.resolve(paths.list_file) if paths.list_file is not None else None
    return KittiDataset(
        config.resolve(images),
        config.resolve(kitti_labels),
        names,
        list_file,
        config.ignore_classes,
        policy,
        progress,
    )


def _voc_set(config: DatasetConfig, entry: str) -> tuple[Path, str]:
    if "/" not in entry:
        raise ConfigError(f"voc sets entry {entry!r}: expected '<year folder>/<image set>', e.g. 'VOC2007/trainval'")
    year, image_set = entry.rsplit("/", 1)
    return config.resolve(Path(year)), image_set


def _build_synthetic(
    config: DatasetConfig, split: Split, policy: BadDataPolicy, for_evaluation: bool, progress: bool
) -> DetectionDataset:
    options = config.synthetic
    layout: SyntheticLayout = ensure_shapes_dataset(config.root, options, progress)
    if options.read_as == "coco":
        annotation_file = layout.coco_annotation_file(split)
        return CocoDataset(
            layout.coco_images_dir, annotation_file, include_crowd=for_evaluation, bad_data=policy, progress=progress
        )
    if options.read_as == "voc":
        return VocDataset([(layout.voc_root, split)], options.classes, False, policy, progress)
    return YoloTxtDataset(layout.images_dir(split), options.classes, None, policy, progress)
