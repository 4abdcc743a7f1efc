"""VOC images are found as ``JPEGImages/<id>.<suffix>``, not through a stale ``<filename>`` field."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolov3.data.bad_data import BadDataPolicy
from yolov3.data.voc import VocDataset


def write_image(path: Path, height: int, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 90, dtype=np.uint8))


def write_annotation(year: Path, name: str, filename: str) -> None:
    box = "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>10</xmax><ymax>10</ymax></bndbox>"
    (year / "Annotations").mkdir(parents=True, exist_ok=True)
    (year / "Annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{filename}</filename><object><name>a</name>{box}</object></annotation>"
    )


@pytest.fixture()
def stale_voc(tmp_path: Path) -> Path:
    """``first.xml`` says ``<filename>second.jpg`` (stale after a copy); ``third`` is a PNG."""
    year = tmp_path / "VOC2007"
    write_image(year / "JPEGImages/first.jpg", 20, 40)
    write_image(year / "JPEGImages/second.jpg", 64, 48)
    write_image(year / "JPEGImages/third.png", 30, 32)
    write_annotation(year, "first", "second.jpg")
    write_annotation(year, "second", "second.jpg")
    write_annotation(year, "third", "third.jpg")  # same id, other suffix: not a mismatch
    (year / "ImageSets/Main").mkdir(parents=True)
    (year / "ImageSets/Main/all.txt").write_text("first\nsecond\nthird\n")
    return year


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_stale_filename_uses_the_id_and_warns_once(stale_voc: Path, mode: str, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        dataset = VocDataset([(stale_voc, "all")], ("a",), bad_data=BadDataPolicy(mode), progress=False)
    paths = [dataset.record(index).path for index in range(len(dataset))]
    assert paths == [
        stale_voc / "JPEGImages/first.jpg",
        stale_voc / "JPEGImages/second.jpg",
        stale_voc / "JPEGImages/third.png",
    ]
    # the size comes from the image itself (no <size>): first.jpg is 20x40, not second.jpg's 64x48
    assert [dataset.record(index).size for index in range(3)] == [(20, 40), (64, 48), (30, 32)]
    assert dataset.bad_data_report()["filename_mismatch"] == 1
    warnings = [record.getMessage() for record in caplog.records if "disagrees" in record.getMessage()]
    assert len(warnings) == 1 and "first.xml" in warnings[0] and "'second.jpg'" in warnings[0]
    assert "filename_mismatch" in caplog.text  # in the bad-data summary line


def test_missing_image_named_by_id(stale_voc: Path) -> None:
    (stale_voc / "JPEGImages/first.jpg").unlink()
    dataset = VocDataset([(stale_voc, "all")], ("a",), progress=False)
    assert len(dataset) == 2 and dataset.bad_data_report()["unreadable_image"] == 1
