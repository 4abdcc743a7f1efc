"""Each dataset format reads hand-written and generated files back exactly; configs build the right dataset."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolov3.config_loading import ConfigError
from yolov3.data.coco import CocoDataset
from yolov3.data.dataset_config import (
    DatasetConfig,
    SplitConfig,
    build_dataset,
    dataset_config_from_mapping,
    load_dataset_config,
)
from yolov3.data.kitti import KittiDataset
from yolov3.data.sample import DetectionSample
from yolov3.data.voc import VOC_CLASSES, VocDataset
from yolov3.data.yolo_txt import YoloTxtDataset


def write_image(path: Path, height: int, width: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), value, dtype=np.uint8))
    return path


def load_config_text(folder: Path, text: str) -> DatasetConfig:
    path = folder / "config.yaml"
    path.write_text(text)
    return load_dataset_config(path)


# --- COCO ------------------------------------------------------------------------------------------------


@pytest.fixture()
def coco_files(tmp_path: Path) -> tuple[Path, Path]:
    """Two images; categories 12, 3, 7 (unsorted, non-contiguous); one crowd region."""
    write_image(tmp_path / "images/a.png", 40, 60)
    write_image(tmp_path / "images/sub/b.png", 50, 30)
    data = {
        "images": [
            {"id": 42, "file_name": "a.png", "height": 40, "width": 60},
            {"id": 7, "file_name": "sub/b.png", "height": 50, "width": 30},
        ],
        "categories": [{"id": 12, "name": "twelve"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 12, "bbox": [1.5, 2, 10, 20.25], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 3, "bbox": [30, 5, 29, 30], "area": 870, "iscrowd": 0},
            {"id": 3, "image_id": 42, "category_id": 7, "bbox": [0, 0, 60, 40], "area": 2400, "iscrowd": 1},
            {"id": 4, "image_id": 7, "category_id": 7, "bbox": [4, 6, 8, 12], "area": 96, "iscrowd": 0},
        ],
    }
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps(data))
    return tmp_path / "images", annotation_file


def test_coco_boxes_labels_and_category_ids(coco_files: tuple[Path, Path]) -> None:
    dataset = CocoDataset(*coco_files, progress=False)
    assert dataset.class_names == ("three", "seven", "twelve")
    assert dataset.label_to_category_id == (3, 7, 12)
    assert dataset.category_id_to_label == {3: 0, 7: 1, 12: 2}
    assert len(dataset) == 2 and [dataset.record(i).image_id for i in range(2)] == [7, 42]
    sample = dataset[1]
    assert isinstance(sample, DetectionSample) and sample.image.shape == (40, 60, 3) and sample.image_id == 42
    np.testing.assert_allclose(sample.boxes_xyxy, [[1.5, 2, 11.5, 22.25], [30, 5, 59, 35]])
    np.testing.assert_array_equal(sample.labels, [2, 0])
    assert sample.boxes_xyxy.dtype == np.float32 and sample.labels.dtype == np.int64
    assert not sample.iscrowd.any()
    boxes, labels, size = dataset.boxes_and_labels(0)
    assert size == (50, 30) and labels.tolist() == [1]
    np.testing.assert_allclose(boxes, [[4, 6, 12, 18]])


def test_coco_crowd_kept_for_evaluation_and_results_round_trip(coco_files: tuple[Path, Path]) -> None:
    dataset = CocoDataset(*coco_files, include_crowd=True, progress=False)
    sample = dataset[1]
    assert sample.iscrowd.tolist() == [False, False, True] and sample.labels.tolist() == [2, 0, 1]
    # Ground truth written back as detections through label_to_category_id scores AP 1 with COCOeval.
    results = []
    for index in range(len(dataset)):
        record = dataset.record(index)
        for box, label, crowd in zip(record.boxes_xyxy, record.labels, record.iscrowd, strict=True):
            if not crowd:
                x1, y1, x2, y2 = box.tolist()
                category_id = dataset.label_to_category_id[label]
                results.append(
                    {"image_id": record.image_id, "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1]}
                )
                results[-1]["score"] = 1.0
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(coco_files[1]))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


# --- Pascal VOC ------------------------------------------------------------------------------------------


def write_voc(year_root: Path, image_set: str, images: dict[str, list[tuple[str, tuple[int, ...], int]]]) -> None:
    """``images``: id -> [(class name, (xmin, ymin, xmax, ymax) 1-based, difficult)]; images are 50x70."""
    (year_root / "Annotations").mkdir(parents=True, exist_ok=True)
    (year_root / "ImageSets/Main").mkdir(parents=True, exist_ok=True)
    for name, objects in images.items():
        write_image(year_root / "JPEGImages" / f"{name}.jpg", 50, 70)
        parts = [f"<annotation><filename>{name}.jpg</filename>"]
        parts.append("<size><width>70</width><height>50</height><depth>3</depth></size>")
        for class_name, (xmin, ymin, xmax, ymax), difficult in objects:
            parts.append(
                f"<object><name>{class_name}</name><pose>Left</pose><truncated>0</truncated>"
                f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
            )
        (year_root / "Annotations" / f"{name}.xml").write_text("".join(parts) + "</annotation>")
    (year_root / "ImageSets/Main" / f"{image_set}.txt").write_text("".join(f"{name}\n" for name in images))


@pytest.fixture()
def voc_root(tmp_path: Path) -> Path:
    write_voc(
        tmp_path / "VOC2007",
        "trainval",
        {"000005": [("chair", (1, 1, 10, 20), 0), ("person", (5, 6, 70, 50), 1)], "000007": [("car", (3, 4, 9, 8), 0)]},
    )
    write_voc(tmp_path / "VOC2007", "test", {"000001": [("dog", (2, 2, 30, 30), 0)]})
    write_voc(tmp_path / "VOC2012", "trainval", {"2008_000002": [("tvmonitor", (10, 10, 40, 45), 1)]})
    return tmp_path


def test_voc_reads_one_based_boxes_and_difficult(voc_root: Path) -> None:
    dataset = VocDataset([(voc_root / "VOC2007", "trainval")], progress=False)
    assert dataset.class_names == VOC_CLASSES and len(VOC_CLASSES) == 20
    sample = dataset[0]
    assert sample.image.shape == (50, 70, 3) and sample.path.endswith("000005.jpg")
    np.testing.assert_allclose(sample.boxes_xyxy, [[0, 0, 10, 20], [4, 5, 70, 50]])
    assert [VOC_CLASSES[label] for label in sample.labels] == ["chair", "person"]
    assert sample.difficult.tolist() == [False, True]
    dropped = VocDataset([(voc_root / "VOC2007", "trainval")], drop_difficult=True, progress=False)
    assert dropped.boxes_and_labels(0)[1].tolist() == [VOC_CLASSES.index("chair")]


def test_voc_2007_plus_2012_combined(voc_root: Path) -> None:
    config = load_config_text(
        voc_root, "format: voc\nroot: .\ntrain: [VOC2007/trainval, VOC2012/trainval]\nval: {sets: [VOC2007/test]}\n"
    )
    train, val = build_dataset(config, "train", progress=False), build_dataset(config, "val", progress=False)
    assert len(train) == 3 and len(val) == 1
    assert [train.record(i).image_id for i in range(3)] == [0, 1, 2]
    assert train.record(2).path == voc_root / "VOC2012/JPEGImages/2008_000002.jpg"
    assert train.record(2).difficult.tolist() == [True]
    np.testing.assert_allclose(val.boxes_and_labels(0)[0], [[1, 1, 30, 30]])


# --- YOLO txt --------------------------------------------------------------------------------------------


def test_yolo_yaml_reading_and_labels(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    write_image(root / "images/train/a.png", 40, 80)
    write_image(root / "images/train/nested/b.jpg", 30, 30)
    write_image(root / "images/train/c.png", 20, 20)
    write_image(root / "images/val/d.png", 20, 20)
    (root / "labels/train/nested").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("1 0.5 0.25 0.5 0.5\n\n0 0.125 0.75 0.25 0.5\n")
    (root / "labels/train/nested/b.txt").write_text("2 0.1 0.2 0.5 0.2 0.3 0.9\n")  # a triangle polygon
    (root / "labels/train/c.txt").write_text("")
    (tmp_path / "data.yaml").write_text(
        "path: dataset\ntrain: images/train\nval: images/val\ntest: images/test\nnc: 3\n"
        "names: {0: cat, 1: dog, 2: bird}\n"
    )
    config = load_dataset_config(tmp_path / "data.yaml")
    assert config.format == "yolo" and config.root == root.resolve() and config.names == ("cat", "dog", "bird")
    dataset = build_dataset(config, "train", progress=False)
    assert isinstance(dataset, YoloTxtDataset) and len(dataset) == 3
    assert [dataset.record(i).path.name for i in range(3)] == ["a.png", "c.png", "b.jpg"]
    boxes, labels, size = dataset.boxes_and_labels(0)
    assert size == (40, 80) and labels.tolist() == [1, 0]
    np.testing.assert_allclose(boxes, [[20, 0, 60, 20], [0, 20, 20, 40]], atol=1e-4 * 80)
    assert len(dataset.boxes_and_labels(1)[0]) == 0  # empty label file
    np.testing.assert_allclose(dataset.boxes_and_labels(2)[0], [[3, 6, 15, 27]], atol=1e-4 * 30)
    assert len(build_dataset(config, "val", progress=False)[0].labels) == 0  # no label file at all
    with pytest.raises(ConfigError, match="nc: 4"):
        (tmp_path / "bad.yaml").write_text("path: dataset\ntrain: images/train\nnc: 4\nnames: [a, b, c]\n")
        load_dataset_config(tmp_path / "bad.yaml")


def test_yolo_labels_folder_and_list_file(tmp_path: Path) -> None:
    write_image(tmp_path / "pictures/x.png", 10, 20)
    write_image(tmp_path / "pictures/y.png", 10, 20)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/x.txt").write_text("0 0.5 0.5 1 1\n")
    dataset = YoloTxtDataset(tmp_path / "pictures", ("thing",), labels_dir=tmp_path / "annotations", progress=False)
    np.testing.assert_allclose(dataset.boxes_and_labels(0)[0], [[0, 0, 20, 10]])
    write_image(tmp_path / "set/images/z.png", 10, 10)
    (tmp_path / "set/labels").mkdir()
    (tmp_path / "set/labels/z.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "set/list.txt").write_text("images/z.png\n")
    listed = YoloTxtDataset(tmp_path / "set/list.txt", ("thing",), progress=False)
    np.testing.assert_allclose(listed.boxes_and_labels(0)[0], [[4, 4, 6, 6]], atol=1e-5)


# --- KITTI -----------------------------------------------------------------------------------------------


def test_kitti_reads_boxes_skips_dontcare_and_follows_list(tmp_path: Path) -> None:
    write_image(tmp_path / "image_2/000000.png", 100, 300)
    write_image(tmp_path / "image_2/000001.png", 100, 300)
    write_image(tmp_path / "image_2/000002.png", 100, 300)
    (tmp_path / "label_2").mkdir()
    (tmp_path / "label_2/000000.txt").write_text(
        "Car 0.00 0 -1.58 12.5 30.25 110.75 90.00 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59\n"
        "DontCare -1 -1 -10 200.00 10.00 250.00 40.00 -1 -1 -1 -1000 -1000 -1000 -10\n"
        "Pedestrian 0.00 1 0.21 150 20 170 80 1.8 0.6 0.8 1 2 3 0.1\n"
    )
    (tmp_path / "label_2/000002.txt").write_text("Cyclist 0 0 0 1 2 3 4\n")
    (tmp_path / "train.txt").write_text("000000\n000001\n")
    dataset = KittiDataset(
        tmp_path / "image_2", tmp_path / "label_2", ("Car", "Pedestrian", "Cyclist"), tmp_path / "train.txt"
    )
    assert len(dataset) == 2
    boxes, labels, size = dataset.boxes_and_labels(0)
    assert size == (100, 300) and labels.tolist() == [0, 1]
    np.testing.assert_allclose(boxes, [[12.5, 30.25, 110.75, 90], [150, 20, 170, 80]])
    assert len(dataset.boxes_and_labels(1)[1]) == 0
    config = DatasetConfig(
        format="kitti",
        root=tmp_path,
        train=SplitConfig(images=Path("image_2"), labels=Path("label_2")),
        names=("Car", "Pedestrian", "Cyclist"),
    )
    assert len(build_dataset(config, "train", progress=False)) == 3


# --- configs ---------------------------------------------------------------------------------------------


def test_synthetic_config_generates_and_reads_each_format(tmp_path: Path) -> None:
    yaml_path = tmp_path / "shapes.yaml"
    yaml_path.write_text(
        "format: synthetic\nroot: generated\n"
        "synthetic: {num_train: 5, num_val: 2, image_size: [64, 96], seed: 1, read_as: yolo}\n"
    )
    config = load_dataset_config(yaml_path)
    train = build_dataset(config, "train", progress=False)
    assert isinstance(train, YoloTxtDataset) and len(train) == 5 and train.class_names == config.class_names()
    assert (tmp_path / "generated/annotations/instances_val.json").is_file()
    val = build_dataset(load_dataset_config(yaml_path, ["synthetic.read_as=coco"]), "val", progress=False)
    assert isinstance(val, CocoDataset) and len(val) == 2 and val[1].image.shape == (64, 96, 3)
    loader = torch.utils.data.DataLoader(train, batch_size=2, num_workers=2, collate_fn=list)
    assert sum(len(batch) for batch in loader) == 5


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("format: coco\nroot: .\ntrian: {images: x}\n")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_dataset_config(tmp_path / "typo.yaml")
    (tmp_path / "format.yaml").write_text("format: cocoa\nroot: .\n")
    with pytest.raises(ConfigError, match="did you mean 'coco'"):
        load_dataset_config(tmp_path / "format.yaml")
    with pytest.raises(ConfigError, match=r"train\.annotations is required"):
        build_dataset(load_config_text(tmp_path, "format: coco\nroot: .\ntrain: images\n"), "train")
    with pytest.raises(ConfigError, match="names"):
        build_dataset(load_config_text(tmp_path, "format: yolo\nroot: .\ntrain: images\n"), "train")
    (tmp_path / "classes.names").write_text("a\nb\n")
    config = load_config_text(tmp_path, "format: yolo\nroot: .\nnames_file: classes.names\n")
    assert config.class_names() == ("a", "b")


def test_config_from_a_nested_mapping(tmp_path: Path) -> None:
    mapping = {"path": "data", "train": "images/train", "names": {0: "a", 1: "b"}}
    config = dataset_config_from_mapping(mapping, "train.yaml: data.dataset", base_dir=tmp_path)
    assert config.format == "yolo" and config.root == tmp_path / "data" and config.names == ("a", "b")
    assert config.train.images == Path("images/train") and config.resolve(Path("x")) == tmp_path / "data/x"
    assert dataset_config_from_mapping({"format": "coco", "root": "rel"}).root == Path("rel")  # cwd-relative


def test_a_training_config_is_accepted_as_dataset_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yolov3.data.dataset_config import load_dataset_config

    monkeypatch.chdir(tmp_path)
    config_path = tmp_path / "configs" / "train.yaml"
    config_path.parent.mkdir()
    config_path.write_text("data:\n  dataset:\n    format: synthetic\n    root: data/shapes\n  image_size: 64\n")
    config = load_dataset_config(config_path, ["synthetic.num_train=4"])
    assert config.format == "synthetic" and config.root == Path("data/shapes")  # relative to the working dir
    assert config.synthetic.num_train == 4
