"""Detection end to end: the real yolov3-tiny against OpenCV's Darknet importer, the Predictor, and the CLI."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, box_convert, box_iou

from yolov3.data.image_io import read_image_rgb
from yolov3.detect import main
from yolov3.inference import Predictor, Preprocessing, decode_outputs, draw_detections, preprocess
from yolov3.inference.coco_results import coco_detections
from yolov3.inference.detect_files import (
    COCO80_TO_COCO91,
    assign_image_ids,
    output_names,
    read_class_names,
    yolo_label_lines,
)
from yolov3.models import yolov3_tiny_test

cv2 = pytest.importorskip("cv2")

CONF_THRESHOLD, IOU_THRESHOLD = 0.25, 0.45
DOG, BICYCLE, CAR, TRUCK = 16, 1, 2, 7


# ---------------------------------------------------------------------------------------------------------------
# The real yolov3-tiny on dog.jpg, against OpenCV's importer on the same input


@pytest.fixture(scope="module")
def tiny_predictor(shared_darknet: Path, tiny_weights: Path) -> Predictor:
    return Predictor.from_darknet(  # our letterbox (from_darknet defaults to Darknet's): compared with OpenCV's blob
        shared_darknet / "yolov3-tiny.cfg",
        tiny_weights,
        conf_threshold=CONF_THRESHOLD,
        iou_threshold=IOU_THRESHOLD,
        preprocessing=Preprocessing(),
    )


def opencv_yolo_rows(cfg_path: Path, weights_path: Path, blob: np.ndarray, directory: Path) -> list[np.ndarray]:
    """OpenCV's [yolo] outputs for ``blob`` (1, 3, H, W), one (H*W*A, 5+C) array per head, nothing thresholded.

    OpenCV's [yolo] layer thresholds class scores at ``thresh`` (default 0.2) and can run its own NMS
    (``nms_threshold``); a copy of the cfg with ``thresh=0`` and ``nms_threshold=0`` in every [yolo] section
    turns both off. Our parser rejects those keys (Darknet has them only in later forks), hence the copy.
    """
    text, count = re.subn(r"^\[yolo\][ \t]*$", "[yolo]\nthresh=0\nnms_threshold=0", cfg_path.read_text(), flags=re.M)
    assert count == 2
    opencv_cfg = directory / "yolov3-tiny-opencv.cfg"
    opencv_cfg.write_text(text)
    net = cv2.dnn.readNetFromDarknet(str(opencv_cfg), str(weights_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(blob)
    return list(net.forward(net.getUnconnectedOutLayersNames()))


def to_opencv_order(decoded_head: np.ndarray, num_anchors: int, grid_height: int, grid_width: int) -> np.ndarray:
    """Our rows (A*H*W, 5+C), anchor-major, -> OpenCV's order (H*W*A, 5+C), row index (y*W + x)*A + a."""
    # (A*H*W, 5+C) -> (A, H, W, 5+C) -> (H, W, A, 5+C) -> (H*W*A, 5+C)
    grid = decoded_head.reshape(num_anchors, grid_height, grid_width, -1).transpose(1, 2, 0, 3)
    return grid.reshape(grid_height * grid_width * num_anchors, -1)


@pytest.mark.slow
def test_detections_match_opencv_on_the_same_input(
    tiny_predictor: Predictor, shared_darknet: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    image = read_image_rgb(shared_darknet / "images" / "dog.jpg")
    blob, placement = preprocess(image, (416, 416), Preprocessing())
    assert (placement.resized_size, placement.pad_top) == ((312, 416), 52)
    heads = opencv_yolo_rows(shared_darknet / "yolov3-tiny.cfg", tiny_weights, blob[None].numpy(), tmp_path)

    # 1. OpenCV's row semantics, checked against our decoded rows: (cx, cy, w, h) / input size, objectness,
    #    then objectness * class probability (not the class probability alone) for every class.
    with torch.inference_mode():
        raw_outputs = tiny_predictor.model(blob[None])
        decoded = decode_outputs(raw_outputs, tiny_predictor.head_specs, (416, 416))[0].numpy()
    start = 0
    for raw, spec, opencv_rows in zip(raw_outputs, tiny_predictor.head_specs, heads, strict=True):
        grid_height, grid_width = raw.shape[2:]
        count = spec.num_anchors * grid_height * grid_width
        ours = to_opencv_order(decoded[start : start + count], spec.num_anchors, grid_height, grid_width)
        start += count
        assert opencv_rows.shape == ours.shape == (count, 85)
        np.testing.assert_allclose(opencv_rows[:, :4] * 416, ours[:, :4], rtol=1e-4, atol=2e-3)
        np.testing.assert_allclose(opencv_rows[:, 4], ours[:, 4], atol=1e-4)
        np.testing.assert_allclose(opencv_rows[:, 5:], ours[:, 4:5] * ours[:, 5:], atol=1e-4)

    # 2. The same threshold and the same torchvision NMS on OpenCV's rows give our detections.
    opencv_rows = torch.from_numpy(np.concatenate(heads))
    class_scores, labels = opencv_rows[:, 5:].max(dim=1)  # already objectness * class probability
    passing = class_scores > CONF_THRESHOLD
    boxes = box_convert(opencv_rows[passing, :4] * 416, in_fmt="cxcywh", out_fmt="xyxy")
    keep = batched_nms(boxes, class_scores[passing], labels[passing], IOU_THRESHOLD)
    reference = {"boxes": boxes[keep], "scores": class_scores[passing][keep], "labels": labels[passing][keep]}
    (ours,) = tiny_predictor.predict_batch(blob[None])
    assert len(ours["scores"]) == len(reference["scores"]) >= 4
    iou = box_iou(ours["boxes"], reference["boxes"])  # (K, K)
    iou[ours["labels"][:, None] != reference["labels"][None, :]] = 0.0  # match within the same class only
    best_iou, match = iou.max(dim=1)
    assert sorted(match.tolist()) == list(range(len(match)))  # one to one
    assert best_iou.min().item() >= 0.99
    torch.testing.assert_close(ours["scores"], reference["scores"][match], rtol=0, atol=1e-3)

    # 3. What the network sees on dog.jpg, mapped back into the photo by Predictor.predict.
    (in_photo,) = tiny_predictor.predict([image])
    torch.testing.assert_close(in_photo["boxes"], placement.boxes_to_original(ours["boxes"]))
    found = set(in_photo["labels"].tolist())
    assert {DOG, BICYCLE} <= found
    assert found & {CAR, TRUCK}
    dog_box = in_photo["boxes"][in_photo["labels"] == DOG][0]
    assert 100 < dog_box[0] < 160 and 400 < dog_box[3] < 560  # the dog sits bottom left of the 768x576 photo


def test_cli_end_to_end_with_the_real_weights(
    shared_darknet: Path, tiny_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    source = tmp_path / "images"
    source.mkdir()
    (source / "dog.jpg").write_bytes((shared_darknet / "images" / "dog.jpg").read_bytes())
    (source / "broken.jpg").write_bytes((shared_darknet / "images" / "dog.jpg").read_bytes()[:300])
    out = tmp_path / "out"
    arguments = ["--cfg", str(shared_darknet / "yolov3-tiny.cfg"), "--weights", str(tiny_weights)]
    arguments += ["--names", str(shared_darknet / "coco.names"), "--source", str(source), "--out", str(out)]
    with caplog.at_level(logging.WARNING):
        assert main([*arguments, "--save-conf", "--coco91"]) == 0
    assert any("broken.jpg" in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("1 images,") and "1 skipped" in summary[0]

    drawn = read_image_rgb(out / "dog.jpg")
    assert drawn.shape == (576, 768, 3)
    assert not (out / "broken.jpg").exists()
    lines = [line.split() for line in (out / "labels" / "dog.txt").read_text().splitlines()]
    assert all(len(line) == 6 for line in lines)  # class cx cy w h score
    assert {int(line[0]) for line in lines} >= {DOG, BICYCLE}
    assert all(0.0 <= float(value) <= 1.0 for line in lines for value in line[1:])

    results = json.loads((out / "detections.json").read_text())
    assert len(results) == len(lines)
    assert {result["image_id"] for result in results} == {1}  # "dog" sorts after "broken"
    assert COCO80_TO_COCO91[DOG] == 18
    assert 18 in {result["category_id"] for result in results}  # COCO's id for dog
    for result, line in zip(results, lines, strict=True):  # the same detections, in the same order
        left, top, width, height = result["bbox"]
        center_x, center_y = (left + width / 2) / 768, (top + height / 2) / 576
        np.testing.assert_allclose([center_x, center_y, width / 768, height / 576], np.float64(line[1:5]), atol=1e-5)
        assert abs(result["score"] - float(line[5])) < 1e-5
    pycocotools_coco = pytest.importorskip("pycocotools.coco")
    ground_truth = pycocotools_coco.COCO()
    ground_truth.dataset = {
        "images": [{"id": 1, "width": 768, "height": 576}],
        "annotations": [],
        "categories": [{"id": identifier} for identifier in COCO80_TO_COCO91],
    }
    ground_truth.createIndex()
    assert len(ground_truth.loadRes(str(out / "detections.json")).getAnnIds()) == len(results)


# ---------------------------------------------------------------------------------------------------------------
# The Predictor and the CLI on a tiny random model (fast)


@pytest.fixture(scope="module")
def test_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``yolov3_tiny_test`` (3 classes) saved as a Darknet .weights file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny-test.weights"
    yolov3_tiny_test(num_classes=3).save_darknet_weights(path)
    return path


def model_arguments(weights: Path, out: Path) -> list[str]:
    model = ["--model", "yolov3_tiny_test", "--num-classes", "3", "--weights", str(weights)]
    return [*model, "--img-size", "64", "96", "--conf", "0.1", "--out", str(out)]


def write_image(path: Path, height: int, width: int, seed: int = 0) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)


def test_predictor_maps_boxes_into_each_image_and_batches_consistently() -> None:
    torch.manual_seed(0)
    model = yolov3_tiny_test(num_classes=3)
    images = [np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8) for i, size in enumerate(
        [(50, 120, 3), (200, 90, 3), (64, 64, 3)]
    )]  # fmt: skip
    one_by_one = Predictor.from_model(model, (64, 96), conf_threshold=0.1, batch_size=1).predict(images)
    together = Predictor.from_model(model, (64, 96), conf_threshold=0.1, batch_size=3).predict(images)
    for image, single, batched in zip(images, one_by_one, together, strict=True):
        assert len(single["scores"]) > 0
        torch.testing.assert_close(single["boxes"], batched["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(single["labels"], batched["labels"])
        height, width = image.shape[:2]
        assert single["boxes"].min() >= 0
        assert (single["boxes"][:, [0, 2]] <= width).all() and (single["boxes"][:, [1, 3]] <= height).all()
        assert draw_detections(image, single, ["a", "b", "c"]).shape == image.shape


def test_predictor_rejects_bad_setups() -> None:
    model = yolov3_tiny_test(num_classes=3)
    with pytest.raises(ValueError, match="2 class names given but the model has 3 classes"):
        Predictor.from_model(model, class_names=["a", "b"])
    with pytest.raises(ValueError, match="input size 100x96 must be a positive multiple of the stride 32"):
        Predictor.from_model(model, (100, 96))
    with pytest.raises(ValueError, match="is not a detector"):
        Predictor.from_model(torch.nn.Conv2d(3, 3, 1))


def test_cli_writes_labels_images_and_coco_results(test_weights: Path, tmp_path: Path) -> None:
    source = tmp_path / "images"
    source.mkdir()
    write_image(source / "000000000139.jpg", 60, 80, seed=1)
    write_image(source / "000000000285.png", 90, 50, seed=2)
    out = tmp_path / "out"
    assert main([*model_arguments(test_weights, out), "--source", str(source / "*.*"), "--batch-size", "2"]) == 0
    assert (out / "000000000139.jpg").is_file() and (out / "000000000285.png").is_file()
    results = json.loads((out / "detections.json").read_text())
    assert {result["image_id"] for result in results} == {139, 285}  # integer stems are COCO ids
    assert {result["category_id"] for result in results} <= {0, 1, 2}
    for stem in ("000000000139", "000000000285"):
        lines = (out / "labels" / f"{stem}.txt").read_text().splitlines()
        assert len(lines) == sum(result["image_id"] == int(stem) for result in results)
        assert all(len(line.split()) == 5 for line in lines)  # no score without --save-conf


def test_corrupt_images_are_skipped_with_a_warning(
    test_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    source = tmp_path / "images"
    source.mkdir()
    write_image(source / "a.jpg", 40, 40)
    (source / "b.jpg").write_bytes(b"not a jpeg at all")
    (source / "c.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert main([*model_arguments(test_weights, tmp_path / "out"), "--source", str(source)]) == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("b.jpg" in message and "not a decodable image" in message for message in warnings)
    assert any("c.png" in message and "empty file" in message for message in warnings)
    summary = capsys.readouterr().out
    assert "1 images," in summary and "2 skipped as unreadable" in summary
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert {result["image_id"] for result in results} <= {0}  # "a.jpg" is index 0 of the sorted source


def test_only_corrupt_images_is_a_failure(test_weights: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "images"
    source.mkdir()
    (source / "b.jpg").write_bytes(b"garbage")
    assert main([*model_arguments(test_weights, tmp_path / "out"), "--source", str(source)]) == 1
    assert "0 images, 0 detections, 1 skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make_source", "expected"),
    [
        (lambda root: root / "missing.jpg", r"missing\.jpg: no such file or directory"),
        (lambda root: root / "missing_dir", r"missing_dir: no such file or directory"),
        (lambda root: root, r": directory has no images"),
        (lambda root: root / "*.png", r"\*\.png: pattern matched no images"),
    ],
    ids=["missing-image", "missing-directory", "empty-directory", "empty-glob"],
)
def test_bad_sources_are_one_line_errors(make_source, expected: str, test_weights: Path, tmp_path: Path, capsys):
    source = tmp_path / "source"
    source.mkdir()
    (source / "notes.txt").write_text("not an image")
    assert main([*model_arguments(test_weights, tmp_path / "out"), "--source", str(make_source(source))]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert str(source) in error[0] and re.search(expected, error[0])
    assert not (tmp_path / "out").exists()


def test_names_file_must_match_the_model(test_weights: Path, tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.jpg", 40, 40)
    names = tmp_path / "two.names"
    names.write_text("cat\ndog\n\n")
    arguments = [*model_arguments(test_weights, tmp_path / "out"), "--source", str(tmp_path / "a.jpg")]
    assert main([*arguments, "--names", str(names)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"error: {names}: has 2 class names, but the model has 3 classes"]
    assert main([*arguments, "--names", str(tmp_path / "none.names")]) == 2
    assert "none.names: cannot read class names" in capsys.readouterr().err
    assert main([*arguments, "--coco91"]) == 2
    assert "--coco91 needs an 80-class COCO model; this one has 3 classes" in capsys.readouterr().err


def test_unknown_model_and_missing_weights_are_errors(test_weights: Path, tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.jpg", 40, 40)
    common = ["--source", str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out")]
    assert main(["--model", "yolov3_tiny_tset", "--weights", str(test_weights), *common]) == 2
    assert "did you mean 'yolov3_tiny_test'" in capsys.readouterr().err
    assert main(["--model", "yolov3_tiny_test", "--weights", str(tmp_path / "nope.weights"), *common]) == 2
    assert "nope.weights" in capsys.readouterr().err


def test_output_helpers() -> None:
    detections = {
        "boxes": torch.tensor([[10.0, 20.0, 50.0, 80.0]]),
        "scores": torch.tensor([0.5]),
        "labels": torch.tensor([16]),
    }
    # cx = 30 / 100, cy = 50 / 200, w = 40 / 100, h = 60 / 200.
    assert yolo_label_lines(detections, (200, 100)) == ["16 0.300000 0.250000 0.400000 0.300000"]
    assert yolo_label_lines(detections, (200, 100), save_conf=True)[0].endswith(" 0.500000")
    assert coco_detections(7, detections) == [
        {"image_id": 7, "category_id": 16, "bbox": [10, 20, 40, 60], "score": 0.5}
    ]
    assert coco_detections(7, detections, category_ids=COCO80_TO_COCO91)[0]["category_id"] == 18
    # Results files round (boxes to 1/1000 px, scores to 6 decimals); evaluation keeps every digit.
    detections = {**detections, "boxes": torch.tensor([[10.12345, 20.0, 50.0, 80.98765]], dtype=torch.float64)}
    detections["scores"] = torch.tensor([0.123456789], dtype=torch.float64)
    (exact,) = coco_detections(7, detections)
    assert exact["bbox"] == [10.12345, 20.0, 50.0 - 10.12345, 80.98765 - 20.0] and exact["score"] == 0.123456789
    (rounded,) = coco_detections(7, detections, rounded=True)
    assert rounded["bbox"] == [10.123, 20.0, 39.877, 60.988] and rounded["score"] == 0.123457
    assert len(COCO80_TO_COCO91) == len(set(COCO80_TO_COCO91)) == 80
    assert (COCO80_TO_COCO91[0], COCO80_TO_COCO91[11], COCO80_TO_COCO91[79]) == (1, 13, 90)
    assert assign_image_ids([Path("b/12.jpg"), Path("a/7.png")]) == [12, 7]
    assert assign_image_ids([Path("12.jpg"), Path("dog.jpg")]) == [0, 1]  # mixed: indices, never colliding
    assert assign_image_ids([Path("a/1.jpg"), Path("b/01.jpg")]) == [0, 1]  # duplicate integers: indices
    assert output_names([Path("a/x.jpg"), Path("b/x.jpg")]) == ["x.jpg", "x_1.jpg"]


def test_read_class_names_ignores_trailing_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "three.names"
    path.write_text("person\nbicycle\ncar\n\n\n")
    assert read_class_names(path, 3) == ["person", "bicycle", "car"]
