"""Bad data under both policies: ``skip`` counts, logs and carries on; ``raise`` names the file, line and problem."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolov3.data.bad_data import BadDataError, BadDataPolicy, find_truncation
from yolov3.data.coco import CocoDataset
from yolov3.data.detection_dataset import read_image_size
from yolov3.data.image_io import ImageReadError
from yolov3.data.kitti import KittiDataset
from yolov3.data.voc import VocDataset
from yolov3.data.yolo_txt import YoloTxtDataset

NAMES = ("a", "b", "c")


def write_image(path: Path, height: int = 20, width: int = 40, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return path


def yolo_dataset(root: Path, labels: dict[str, str], mode: str) -> YoloTxtDataset:
    """Images ``root/images/<name>.png`` (20 x 40) with the given label text."""
    for name, text in labels.items():
        write_image(root / "images" / f"{name}.png")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{name}.txt").write_text(text)
    return YoloTxtDataset(root / "images", NAMES, bad_data=BadDataPolicy(mode), progress=False)


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# --- labels ----------------------------------------------------------------------------------------------

LABEL_CASES = [
    # (label line, kind, message fragment)
    ("0 1.5 0.5 0.2 0.2", "box_outside_image", "lies outside the 40x20 image"),
    ("0 0.5 0.5 0 0.2", "empty_box", "expected x1 < x2 and y1 < y2"),
    ("0 0.5 0.5 0.3 -0.1", "empty_box", "zero or negative area"),
    ("7 0.5 0.5 0.2 0.2", "unknown_class", "class 7 is outside 0..2"),
    ("-1 0.5 0.5 0.2 0.2", "unknown_class", "class -1 is outside 0..2"),
    ("0 0.5 0.5 0.2", "malformed_label", "expected 'class cx cy w h'"),
    ("0 0.5 0.5 0.2 0.2 0.7", "malformed_label", "6 fields"),
    ("0 0.5 zero 0.2 0.2", "malformed_label", "is not all numbers"),
    ("1.5 0.5 0.5 0.2 0.2", "malformed_label", "class '1.5' is not an integer"),
    ("0 nan 0.5 0.2 0.2", "malformed_label", "is not finite"),
]


@pytest.mark.parametrize(("line", "kind", "fragment"), LABEL_CASES)
def test_yolo_label_problems_skip(tmp_path: Path, line: str, kind: str, fragment: str) -> None:
    dataset = yolo_dataset(tmp_path, {"x": f"1 0.5 0.5 0.5 0.5\n{line}\n2 0.25 0.25 0.1 0.2\n"}, "skip")
    boxes, labels, _ = dataset.boxes_and_labels(0)
    assert labels.tolist() == [1, 2]  # the good lines around the bad one are kept
    np.testing.assert_allclose(boxes, [[10, 5, 30, 15], [8, 3, 12, 7]], atol=1e-4)
    report = dataset.bad_data_report()
    assert report[kind] == 1 and sum(report.values()) == 1


@pytest.mark.parametrize(("line", "kind", "fragment"), LABEL_CASES)
def test_yolo_label_problems_raise(tmp_path: Path, line: str, kind: str, fragment: str) -> None:
    with pytest.raises(BadDataError) as caught:
        yolo_dataset(tmp_path, {"x": f"1 0.5 0.5 0.5 0.5\n{line}\n"}, "raise")
    assert caught.value.kind == kind
    assert f"{tmp_path / 'labels' / 'x.txt'}:2" in str(caught.value) and fragment in str(caught.value)


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_box_partly_outside_is_clipped_and_counted(tmp_path: Path, mode: str) -> None:
    dataset = yolo_dataset(tmp_path, {"x": "0 0.95 0.5 0.2 0.4\n1 0.5 -0.05 0.2 0.3\n"}, mode)
    np.testing.assert_allclose(dataset.boxes_and_labels(0)[0], [[34, 6, 40, 14], [16, 0, 24, 2]], atol=1e-4)
    assert dataset.bad_data_report()["box_clipped"] == 2


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_voc_problems(tmp_path: Path, mode: str) -> None:
    year = tmp_path / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets/Main").mkdir(parents=True)
    objects = {
        "good": ("a", 1, 1, 10, 10),
        "unicorn": ("unicorn", 1, 1, 10, 10),
        "flat": ("b", 6, 5, 5, 12),
        "away": ("c", 50, 30, 60, 40),
        "text": ("a", "one", 1, 10, 10),
    }
    for name, (class_name, xmin, ymin, xmax, ymax) in objects.items():
        write_image(year / "JPEGImages" / f"{name}.jpg")
        box = f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
        (year / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><object><name>{class_name}</name>{box}</object></annotation>"
        )
    write_image(year / "JPEGImages/broken.jpg")
    (year / "Annotations/broken.xml").write_text("<annotation><object>")
    (year / "ImageSets/Main/all.txt").write_text("\n".join(["good", *list(objects)[1:], "broken"]))
    if mode == "raise":
        with pytest.raises(BadDataError, match=r"unicorn\.xml, object 1: class 'unicorn' is not one of"):
            VocDataset([(year, "all")], NAMES, bad_data=BadDataPolicy(mode), progress=False)
        return
    dataset = VocDataset([(year, "all")], NAMES, bad_data=BadDataPolicy(mode), progress=False)
    assert len(dataset) == 5  # the broken XML's image is left out; the others keep their images
    assert [len(dataset.boxes_and_labels(i)[1]) for i in range(5)] == [1, 0, 0, 0, 0]
    report = dataset.bad_data_report()
    assert report["unknown_class"] == 1 and report["empty_box"] == 1 and report["box_outside_image"] == 1
    assert report["malformed_label"] == 2  # "one" is not a number; broken XML


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_kitti_problems(tmp_path: Path, mode: str) -> None:
    write_image(tmp_path / "images/000000.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/000000.txt").write_text(
        "a 0 0 0 1 2 10 12\nTram 0 0 0 1 2 10 12\nb 0 0 0 1 2\nc 0 0 0 5 5 5 9\nDontCare 0 0 0 1 1 2 2\n"
    )
    make = lambda: KittiDataset(  # noqa: E731
        tmp_path / "images", tmp_path / "labels", NAMES, bad_data=BadDataPolicy(mode), progress=False
    )
    if mode == "raise":
        with pytest.raises(BadDataError, match=r"000000\.txt:2: class 'Tram' is not one of"):
            make()
        return
    dataset = make()
    assert dataset.boxes_and_labels(0)[1].tolist() == [0]
    report = dataset.bad_data_report()
    assert (report["unknown_class"], report["malformed_label"], report["empty_box"]) == (1, 1, 1)


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_coco_problems(tmp_path: Path, mode: str) -> None:
    write_image(tmp_path / "images/a.png")
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25},
        {"id": 2, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5], "iscrowd": 0, "area": 25},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5], "iscrowd": 0, "area": 0},
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [100, 1, 5, 5], "iscrowd": 0, "area": 25},
    ]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 40}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": annotations,
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    policy = BadDataPolicy(mode)
    if mode == "raise":
        with pytest.raises(BadDataError, match=r"annotation id 2\): category_id 99 is not in the categories \[1\]"):
            CocoDataset(tmp_path / "images", tmp_path / "instances.json", bad_data=policy, progress=False)
        return
    dataset = CocoDataset(tmp_path / "images", tmp_path / "instances.json", bad_data=policy, progress=False)
    np.testing.assert_allclose(dataset[0].boxes_xyxy, [[1, 1, 6, 6]])
    report = dataset.bad_data_report()
    assert [report[kind] for kind in ("unknown_class", "malformed_label", "empty_box", "box_outside_image")] == [
        1,
        1,
        1,
        1,
    ]


# --- images ----------------------------------------------------------------------------------------------


def coco_with_images(root: Path, mode: str, names: list[str], missing: tuple[str, ...] = ()) -> CocoDataset:
    """A COCO dataset of 20 x 40 images, one box each; images already there (bad ones) are left alone."""
    images = []
    for index, name in enumerate(names, start=1):
        if not (root / "images" / name).exists() and name not in missing:
            write_image(root / "images" / name, value=index)
        images.append({"id": index, "file_name": name, "height": 20, "width": 40})
    annotations = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25}
        for i in range(1, len(names) + 1)
    ]
    data = {"images": images, "categories": [{"id": 1, "name": "a"}], "annotations": annotations}
    (root / "instances.json").write_text(json.dumps(data))
    return CocoDataset(root / "images", root / "instances.json", bad_data=BadDataPolicy(mode), progress=False)


def corrupt_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image")


IMAGE_CASES = {
    # case: (file name, how to make it bad, reason in the error)
    "garbage": ("b.png", corrupt_file, "not a decodable image"),
    "missing": ("b.png", lambda path: None, "no such file"),
    "truncated_png": ("b.png", lambda path: truncate(write_image(path)), "truncated"),
    "truncated_jpeg": ("b.jpg", lambda path: truncate(write_image(path)), "truncated"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_unreadable_images_on_access(tmp_path: Path, case: str, mode: str) -> None:
    bad_name, make_bad, reason = IMAGE_CASES[case]
    (tmp_path / "images").mkdir()
    make_bad(tmp_path / "images" / bad_name)
    dataset = coco_with_images(tmp_path, mode, ["a.png", bad_name, "c.png"], missing=(bad_name,))
    assert dataset[0].image.shape == (20, 40, 3)
    if mode == "raise":
        with pytest.raises(ImageReadError, match=reason) as caught:
            dataset[1]
        assert caught.value.path == tmp_path / "images" / bad_name
        return
    sample = dataset[1]  # the next readable sample instead
    assert sample.path.endswith("c.png") and sample.image_id == 3
    assert dataset[1].image_id == 3 and dataset.bad_data_report()["unreadable_image"] == 1  # counted once


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_in_a_yolo_dataset_is_skipped(tmp_path: Path, suffix: str) -> None:
    truncate(write_image(tmp_path / "images" / f"bad{suffix}"))
    dataset = yolo_dataset(tmp_path, {"good": "0 0.5 0.5 0.1 0.1\n"}, "skip")
    paths = {Path(dataset[index].path).name for index in range(len(dataset))}  # found at scan or on access
    assert paths == {"good.png"} and dataset.bad_data_report()["unreadable_image"] == 1


def test_find_truncation_checks_the_end_marker(tmp_path: Path) -> None:
    assert find_truncation(truncate(write_image(tmp_path / "t.jpg"))) == "truncated JPEG (no end-of-image marker)"
    assert find_truncation(truncate(write_image(tmp_path / "t.png"))) == "truncated PNG (no IEND chunk at the end)"
    assert find_truncation(write_image(tmp_path / "ok.jpg")) is None
    assert find_truncation(write_image(tmp_path / "ok.png")) is None
    padded = write_image(tmp_path / "padded.jpg")
    padded.write_bytes(padded.read_bytes() + b"\x00" * 16)
    assert find_truncation(padded) is None
    assert read_image_size(tmp_path / "ok.jpg") == (20, 40)


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_unreadable_image_at_scan(tmp_path: Path, mode: str) -> None:
    corrupt_file(tmp_path / "images/bad.png")
    (tmp_path / "labels").mkdir(parents=True)
    (tmp_path / "labels/bad.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    if mode == "raise":
        with pytest.raises(ImageReadError, match=r"bad\.png: not a readable image header"):
            yolo_dataset(tmp_path, {"good": "0 0.5 0.5 0.1 0.1\n"}, mode)
        return
    dataset = yolo_dataset(tmp_path, {"good": "0 0.5 0.5 0.1 0.1\n"}, mode)
    assert len(dataset) == 1 and dataset.bad_data_report()["unreadable_image"] == 1


def test_skip_keeps_a_dataloader_worker_alive(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    corrupt_file(tmp_path / "images/c.png")
    dataset = coco_with_images(tmp_path, "skip", ["a.png", "b.png", "c.png", "d.png"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list)
    paths = [Path(sample.path).name for batch in loader for sample in batch]
    assert paths == ["a.png", "b.png", "d.png", "d.png"]


def test_no_readable_image_at_all(tmp_path: Path) -> None:
    corrupt_file(tmp_path / "images/a.png")
    dataset = coco_with_images(tmp_path, "skip", ["a.png"])
    with pytest.raises(RuntimeError, match="none of the 1 images can be read"):
        dataset[0]


def test_warnings_are_logged_then_only_counted(caplog: pytest.LogCaptureFixture) -> None:
    policy = BadDataPolicy("skip", log_limit=2)
    with caplog.at_level(logging.WARNING, logger="yolov3.data.bad_data"):
        for index in range(5):
            policy.problem("empty_box", f"file.txt:{index}: empty")
        policy.log_summary("file.txt")
    messages = [record.getMessage() for record in caplog.records]
    assert messages[:3] == [
        "file.txt:0: empty (skipped)",
        "file.txt:1: empty (skipped)",
        "further 'empty_box' problems are counted but not logged",
    ]
    assert messages[-1] == "file.txt: bad data: 5 empty_box (policy 'skip')"
    assert policy.counts()["empty_box"] == 5
    with pytest.raises(ValueError, match="bad_data must be"):
        BadDataPolicy("ignore")
