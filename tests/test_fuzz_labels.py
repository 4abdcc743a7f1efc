"""Property-based fuzzing (hypothesis) of the label readers: YOLO txt, VOC XML, COCO JSON and KITTI.

Whatever the label bytes: under ``bad_data: skip`` no exception (problems are counted and the rest is read;
only a COCO file that is not a COCO file at all raises :class:`BadDataError`), and every sample then loads
with finite, non-empty boxes; under ``raise`` only :class:`BadDataError` or :class:`ImageReadError`.
Settings and shared strategies are in ``fuzzing.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from fuzzing import fields, fuzz_settings, json_numbers, json_values, quiet_logs  # noqa: F401
from hypothesis import given
from hypothesis import strategies as st

from yolov3.data.bad_data import BadDataError, BadDataPolicy
from yolov3.data.coco import CocoDataset
from yolov3.data.detection_dataset import DetectionDataset, NoReadableImageError
from yolov3.data.image_io import ImageReadError
from yolov3.data.kitti import KittiDataset
from yolov3.data.voc import VocDataset
from yolov3.data.yolo_txt import YoloTxtDataset

pytestmark = pytest.mark.usefixtures("quiet_logs")

NAMES = ("a", "b", "c")
IMAGE_HEIGHT, IMAGE_WIDTH = 20, 40


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small PNG per format, where each reader looks for it; the labels are written per example."""
    root = tmp_path_factory.mktemp("fuzz_labels")
    image = np.random.default_rng(0).integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    for relative in ("yolo/images/a.png", "voc/JPEGImages/a.png", "coco/images/a.png", "kitti/images/a.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / relative), image)
    for folder in ("yolo/labels", "voc/Annotations", "voc/ImageSets/Main", "kitti/labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "voc/ImageSets/Main/train.txt").write_text("a\n")
    return root


def check_reader(build: Callable[[BadDataPolicy], DetectionDataset], whole_file: bool = False) -> None:
    """``skip``: no exception (but BadDataError for a file that is unusable as a whole, when ``whole_file``),
    every sample loads (or NoReadableImageError, the documented end of a dataset without a readable image) with
    finite, non-empty boxes; ``raise``: only BadDataError or ImageReadError."""
    try:
        dataset = build(BadDataPolicy("skip"))
    except BadDataError:
        if not whole_file:
            raise
    else:
        for index in range(len(dataset)):
            dataset.boxes_and_labels(index)
            try:
                boxes = dataset[index].boxes_xyxy
            except NoReadableImageError:
                continue
            assert np.isfinite(boxes).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    with contextlib.suppress(BadDataError, ImageReadError):
        build(BadDataPolicy("raise"))


yolo_lines = st.lists(fields, max_size=9).map(" ".join)
label_files = st.one_of(
    st.lists(yolo_lines, max_size=5).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
)


@given(label=label_files)
@fuzz_settings(400)
def test_yolo_labels(label: bytes, data_root: Path) -> None:
    (data_root / "yolo/labels/a.txt").write_bytes(label)
    check_reader(lambda policy: YoloTxtDataset(data_root / "yolo/images", NAMES, bad_data=policy, progress=False))


kitti_lines = st.builds(
    lambda name, numbers: " ".join([name, *numbers]),
    st.sampled_from(("a", "b", "DontCare", "Car", "")) | st.text(max_size=4),
    st.lists(fields, max_size=15),
)
kitti_files = st.one_of(
    st.lists(kitti_lines, max_size=5).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
)


@given(label=kitti_files, listed=st.none() | st.binary(max_size=20) | st.just(b"a\nb\n"))
@fuzz_settings(300)
def test_kitti_labels(label: bytes, listed: bytes | None, data_root: Path) -> None:
    (data_root / "kitti/labels/a.txt").write_bytes(label)
    list_file = None
    if listed is not None:
        list_file = data_root / "kitti/list.txt"
        list_file.write_bytes(listed)
    check_reader(
        lambda policy: KittiDataset(
            data_root / "kitti/images", data_root / "kitti/labels", NAMES, list_file, bad_data=policy, progress=False
        )
    )


def xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def voc_annotations(draw: st.DrawFn) -> bytes:
    """A VOC annotation with random tags left out and random values; sometimes cut short, with a random
    encoding declaration, or random bytes."""

    def tag(name: str, value: str) -> str:
        return "" if draw(st.integers(0, 9)) == 0 else f"<{name}>{value}</{name}>"

    def number() -> str:
        return xml_text(draw(fields))

    objects = []
    for _ in range(draw(st.integers(0, 3))):
        corners = "".join(tag(key, number()) for key in ("xmin", "ymin", "xmax", "ymax"))
        name = draw(st.sampled_from(NAMES) | st.text(max_size=3).map(xml_text))
        objects.append(f"<object>{tag('name', name)}{tag('difficult', number())}{tag('bndbox', corners)}</object>")
    size = tag("size", tag("width", number()) + tag("height", number()) + tag("depth", "3"))
    filename = tag("filename", draw(st.sampled_from(("a.png", "b.jpg", ""))))
    text = f"<annotation>{filename}{size}{''.join(objects)}</annotation>".encode()
    action = draw(st.integers(0, 9))
    if action == 0:
        return draw(st.binary(max_size=60))
    if action == 1:
        return text[: draw(st.integers(0, len(text)))]
    if action == 2:
        return b"<?xml version='1.0' encoding='" + draw(st.text(max_size=8)).encode() + b"'?>" + text
    return text


@given(annotation=voc_annotations())
@fuzz_settings(400)
def test_voc_annotations(annotation: bytes, data_root: Path) -> None:
    (data_root / "voc/Annotations/a.xml").write_bytes(annotation)
    check_reader(lambda policy: VocDataset([(data_root / "voc", "train")], NAMES, bad_data=policy, progress=False))


VALID_COCO = {
    "images": [{"id": 1, "file_name": "a.png", "height": IMAGE_HEIGHT, "width": IMAGE_WIDTH}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8], "area": 80, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [5, 5, 4, 4], "area": 16, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}
COCO_KEYS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox", "iscrowd"),
    "categories": ("id", "name"),
}


@st.composite
def coco_files(draw: st.DrawFn) -> bytes:
    """The valid file with 1..3 sections, entries or values replaced by random JSON (or removed); sometimes
    cut short, or another JSON document altogether."""
    data = json.loads(json.dumps(VALID_COCO))
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(sorted(COCO_KEYS)))
        where = draw(st.sampled_from(("section", "entry", "value", "value", "value", "value")))
        replacement = draw(json_values | json_numbers)
        entries = data.get(section)
        if where == "section" or not isinstance(entries, list) or not entries:
            if draw(st.booleans()):
                data.pop(section, None)
            else:
                data[section] = replacement
            continue
        index = draw(st.integers(0, len(entries) - 1))
        if where == "entry" or not isinstance(entries[index], dict):
            entries[index] = replacement
            continue
        key = draw(st.sampled_from(COCO_KEYS[section]))
        if draw(st.integers(0, 4)) == 0:
            entries[index].pop(key, None)
        elif key == "bbox" and draw(st.booleans()):
            entries[index][key] = draw(st.lists(json_numbers | json_values, max_size=5))
        else:
            entries[index][key] = replacement
    text = json.dumps(data).encode()
    action = draw(st.integers(0, 19))
    if action == 0:
        return text[: draw(st.integers(0, len(text)))]
    return json.dumps(draw(json_values)).encode() if action == 1 else text


@given(annotation=coco_files())
@fuzz_settings(500)
def test_coco_annotations(annotation: bytes, data_root: Path) -> None:
    path = data_root / "coco/instances.json"
    path.write_bytes(annotation)
    check_reader(lambda policy: CocoDataset(data_root / "coco/images", path, bad_data=policy, progress=False), True)


# --- the inputs fuzzing found (each raised an internal exception before) ---------------------------------


def test_found_by_fuzzing(data_root: Path) -> None:
    yolo, voc = data_root / "yolo", data_root / "voc"
    (yolo / "labels/a.txt").write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.2\n\x80\n")  # BOM; not UTF-8 (UnicodeDecodeError)
    dataset = YoloTxtDataset(yolo / "images", NAMES, bad_data=BadDataPolicy("skip"), progress=False)
    assert len(dataset.record(0).labels) == 1 and dataset.bad_data_report()["malformed_label"] == 1
    for xml, problem in (
        (b"<annotation><size><height>1e400</height><width>5</width></size></annotation>", None),  # OverflowError
        (b"<annotation><size><height>" + b"9" * 30 + b"</height><width>5</width></size></annotation>", None),
        (b"<?xml version='1.0' encoding='A'?><annotation/>", r"not valid XML \(unknown encoding: A\)"),  # LookupError
    ):
        (voc / "Annotations/a.xml").write_bytes(xml)
        policy = BadDataPolicy("raise")
        if problem is None:  # the size comes from the image instead
            assert VocDataset([(voc, "train")], NAMES, bad_data=policy, progress=False).record(0).size == (20, 40)
        else:
            with pytest.raises(BadDataError, match=problem):
                VocDataset([(voc, "train")], NAMES, bad_data=policy, progress=False)
    coco = data_root / "coco/instances.json"
    for data, problem in (
        ({**VALID_COCO, "images": [{"id": 1, "file_name": "a.png", "height": None, "width": 40}]}, "height is None"),
        ({**VALID_COCO, "categories": 5}, "categories is a int; expected a list"),
        ({**VALID_COCO, "annotations": [[1, 2]]}, r"annotations\[0\] is \[1, 2\]; expected an object"),
        ({**VALID_COCO, "images": [{"id": 2**64, "file_name": "a.png", "height": 1, "width": 1}]}, "id is 1844"),
        ([1], "the top level is a list"),
    ):
        coco.write_text(json.dumps(data))
        with pytest.raises(BadDataError, match=problem):
            CocoDataset(data_root / "coco/images", coco, bad_data=BadDataPolicy("raise"), progress=False)
    (data_root / "kitti/list.txt").write_bytes(b"\x80\n")  # not UTF-8: a stem that is not there
    kitti = KittiDataset(
        data_root / "kitti/images", data_root / "kitti/labels", NAMES, data_root / "kitti/list.txt", progress=False
    )
    assert len(kitti) == 0 and kitti.bad_data_report()["unreadable_image"] == 1
