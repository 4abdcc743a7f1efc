"""The synthetic shapes generator: determinism, tight boxes, agreement between the formats it writes, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from yolov3.cli import synthetic
from yolov3.data import shapes_dataset
from yolov3.data.coco import CocoDataset
from yolov3.data.image_io import read_image_rgb
from yolov3.data.shapes import SHAPE_NAMES, shape_mask
from yolov3.data.shapes_dataset import SyntheticOptions, ensure_shapes_dataset, generate_shapes_dataset
from yolov3.data.voc import VocDataset
from yolov3.data.yolo_txt import YoloTxtDataset


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes_dataset(
        root, num_train=12, num_val=4, image_size=(96, 128), min_image_size=(64, 80), seed=3, progress=False
    )
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_images(tmp_path: Path, shapes_root: Path) -> None:
    generate_shapes_dataset(
        tmp_path / "again", 12, 4, image_size=(96, 128), min_image_size=(64, 80), seed=3, progress=False
    )
    assert _files(tmp_path / "again") == _files(shapes_root)
    generate_shapes_dataset(
        tmp_path / "other", 12, 4, image_size=(96, 128), min_image_size=(64, 80), seed=4, progress=False
    )
    first = read_image_rgb(shapes_root / "images/train/000000.png")
    assert not np.array_equal(read_image_rgb(tmp_path / "other/images/train/000000.png"), first)


def test_image_depends_only_on_seed_split_and_index(tmp_path: Path, shapes_root: Path) -> None:
    generate_shapes_dataset(
        tmp_path / "more", 20, 2, image_size=(96, 128), min_image_size=(64, 80), seed=3, progress=False
    )
    for name in ("images/train/000011.png", "labels/train/000011.txt", "images/val/000001.png"):
        assert (tmp_path / "more" / name).read_bytes() == (shapes_root / name).read_bytes()


def test_boxes_are_tight_around_each_shape_drawn_alone(tmp_path: Path) -> None:
    generate_shapes_dataset(
        tmp_path,
        num_train=28,
        num_val=0,
        image_size=(72, 88),
        classes=SHAPE_NAMES,
        seed=0,
        formats=("coco",),
        min_objects=1,
        max_objects=1,
        background="plain",
        object_size_range=(0.1, 0.9),
        progress=False,
    )
    coco = json.loads((tmp_path / "annotations/instances_train.json").read_text())
    seen_shapes = set()
    for image, annotation in zip(coco["images"], coco["annotations"], strict=True):
        pixels = read_image_rgb(tmp_path / "images" / image["file_name"]).astype(int)
        background = pixels[0, 0] if annotation["bbox"][:2] != [0, 0] else pixels[-1, -1]
        ys, xs = np.nonzero(np.abs(pixels - background).sum(axis=2) > 0)
        x, y, width, height = annotation["bbox"]
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x, y, x + width, y + height]
        assert annotation["area"] == len(xs)
        seen_shapes.add(annotation["category_id"])
    assert len(seen_shapes) >= 5


def test_shapes_differ_from_each_other() -> None:
    masks = {name: shape_mask(name, 40, 40) for name in SHAPE_NAMES}
    for first in SHAPE_NAMES:
        assert masks[first].any(axis=0).all() and masks[first].any(axis=1).all()  # fills its box
        for second in SHAPE_NAMES:
            if first < second:
                iou = (masks[first] & masks[second]).sum() / (masks[first] | masks[second]).sum()
                assert iou < 0.9, (first, second, iou)


def test_formats_agree(shapes_root: Path) -> None:
    names = ("circle", "square", "triangle")
    for split in ("train", "val"):
        coco = CocoDataset(shapes_root / "images", shapes_root / f"annotations/instances_{split}.json", progress=False)
        voc = VocDataset([(shapes_root / "voc", split)], names, progress=False)
        yolo = YoloTxtDataset(shapes_root / "images" / split, names, progress=False)
        assert len(coco) == len(voc) == len(yolo) == {"train": 12, "val": 4}[split]
        assert coco.class_names == voc.class_names == yolo.class_names == names
        for index in range(len(coco)):
            boxes, labels, size = coco.boxes_and_labels(index)
            for other in (voc, yolo):
                other_boxes, other_labels, other_size = other.boxes_and_labels(index)
                assert other_size == size
                np.testing.assert_array_equal(other_labels, labels)
                np.testing.assert_allclose(other_boxes, boxes, atol=1e-4 * max(size))
            assert np.array_equal(coco[index].image, voc[index].image)
            assert Path(yolo.record(index).path) == Path(coco.record(index).path)


def test_yolo_yaml_and_marker(shapes_root: Path) -> None:
    data = yaml.safe_load((shapes_root / "data.yaml").read_text())
    assert data == {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        "names": ["circle", "square", "triangle"],
    }
    marker = json.loads((shapes_root / shapes_dataset.MARKER_NAME).read_text())
    assert marker["complete"] is True and marker["options"]["seed"] == 3


def test_ensure_reuses_regenerates_and_protects(tmp_path: Path) -> None:
    options = SyntheticOptions(num_train=3, num_val=1, image_size=(64, 64))
    root = tmp_path / "data"
    ensure_shapes_dataset(root, options, progress=False)
    image = root / "images/train/000000.png"
    stamp = image.stat().st_mtime_ns
    ensure_shapes_dataset(root, SyntheticOptions(num_train=3, num_val=1, image_size=(64, 64), read_as="yolo"))
    assert image.stat().st_mtime_ns == stamp  # reading another format does not regenerate
    ensure_shapes_dataset(root, SyntheticOptions(num_train=2, num_val=1, image_size=(64, 64)), progress=False)
    assert not (root / "images/train/000002.png").exists()
    (root / shapes_dataset.MARKER_NAME).unlink()
    with pytest.raises(FileExistsError, match="not written by the synthetic generator"):
        ensure_shapes_dataset(root, options, progress=False)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="classes"):
        SyntheticOptions(classes=("circle", "blob"))
    with pytest.raises(ValueError, match="read_as"):
        SyntheticOptions(formats=("yolo",), read_as="coco")
    with pytest.raises(ValueError, match="min_image_size"):
        SyntheticOptions(image_size=(64, 64), min_image_size=(128, 32))


def test_cli_writes_requested_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--num-train", "2", "--num-val", "1", "--image-size", "48", "64"]
    assert synthetic.main([*argv, "--formats", "yolo", "--classes", "star", "cross"]) == 0
    assert "2 train + 1 val images" in capsys.readouterr().out
    assert read_image_rgb(tmp_path / "images/val/000000.png").shape == (48, 64, 3)
    assert (tmp_path / "labels/train/000001.txt").is_file()
    assert not (tmp_path / "annotations").exists() and not (tmp_path / "voc").exists()
    assert synthetic.main(["--out", str(tmp_path), "--image-size", "8"]) == 2
