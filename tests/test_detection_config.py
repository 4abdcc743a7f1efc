"""``DetectionConfig``: one set of detection settings, checked in one place, shared by postprocess, Predictor,
the ONNX NMS graph, the training config's ``eval:`` section and validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from yolov3.config_loading import ConfigError
from yolov3.export.nms_graph import DetectionPostprocess, NmsOptions
from yolov3.inference.detection_config import EVALUATION_DETECTION, DetectionConfig
from yolov3.inference.postprocess import darknet_postprocess, detect_rows, postprocess
from yolov3.inference.predictor import Predictor
from yolov3.models import yolov3_tiny_test
from yolov3.models.yolo_head import YoloHeadSpec
from yolov3.train.config import EvalConfig, load_train_config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("conf_threshold", -0.1, r"conf_threshold must be in \[0, 1\) .*got -0\.1"),
        ("conf_threshold", 1.0, r"conf_threshold must be in \[0, 1\) .*got 1\.0"),
        ("conf_threshold", "0.5", r"conf_threshold must be a number, got '0\.5'"),
        ("iou_threshold", 1.5, r"iou_threshold must be in \[0, 1\], got 1\.5"),
        ("max_detections", 0, r"max_detections must be at least 1 .*got 0"),
        ("max_detections", 2.5, r"max_detections must be an integer, got 2\.5"),
        ("multi_label", 1, r"multi_label must be true or false, got 1"),
        ("class_agnostic", "yes", r"class_agnostic must be true or false, got 'yes'"),
        ("output", "yolo", r"output must be one of standard, darknet, got 'yolo'"),
    ],
)
def test_each_rule_names_the_field_the_value_and_what_is_allowed(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DetectionConfig(**{field: value})


def test_limits_are_accepted_and_numbers_made_plain() -> None:
    config = DetectionConfig(conf_threshold=0, iou_threshold=1, max_detections=np.int64(1))
    assert (config.conf_threshold, config.iou_threshold, config.max_detections) == (0.0, 1.0, 1)
    assert type(config.conf_threshold) is float and type(config.max_detections) is int  # JSON-ready
    assert DetectionConfig(conf_threshold=np.float32(0.5)).conf_threshold == 0.5


def test_with_values_replaces_only_what_is_given() -> None:
    config = DetectionConfig().with_values(conf_threshold=0.5, max_detections=None, multi_label=True)
    assert config == DetectionConfig(conf_threshold=0.5, multi_label=True)
    with pytest.raises(ValueError, match="max_detections must be at least 1"):
        config.with_values(max_detections=0)
    assert dataclasses.is_dataclass(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.conf_threshold = 0.1  # type: ignore[misc]


def test_every_consumer_follows_the_one_rule() -> None:
    """The disagreement this replaced: NmsOptions refused max_detections=0 and postprocess accepted it."""
    decoded = torch.zeros(1, 4, 6)
    model = yolov3_tiny_test(num_classes=1)
    for refuse in (
        lambda: postprocess(decoded, max_detections=0),
        lambda: NmsOptions(max_detections=0),
        lambda: EvalConfig(max_detections=0),
        lambda: Predictor(model, model.head_specs, (64, 64), max_detections=0),
    ):
        with pytest.raises(ValueError, match=r"max_detections must be at least 1 .*got 0"):
            refuse()
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        darknet_postprocess(decoded, iou_threshold=2.0)
    assert NmsOptions is DetectionConfig


def rows(*boxes: tuple[tuple[float, float, float, float], float, list[float]]) -> torch.Tensor:
    """Decoded rows (1, N, 5+C) from (xyxy box, objectness, class probabilities)."""
    result = []
    for (left, top, right, bottom), objectness, class_probabilities in boxes:
        result.append([(left + right) / 2, (top + bottom) / 2, right - left, bottom - top, objectness,
                       *class_probabilities])  # fmt: skip
    return torch.tensor([result], dtype=torch.float32)


def test_detect_rows_applies_each_field() -> None:
    # Box A: obj 0.9 x (0.8, 0.5) = (0.72, 0.45); box B overlaps A (IoU 0.6) with class 1 at 0.4; box C apart.
    decoded = rows(
        ((0, 0, 10, 10), 0.9, [0.8, 0.5]),
        ((0, 0, 10, 6), 1.0, [0.1, 0.4]),
        ((50, 50, 60, 60), 0.5, [0.7, 0.0]),
    )
    (standard,) = detect_rows(decoded, DetectionConfig(conf_threshold=0.3))
    assert standard["labels"].tolist() == [0, 1, 0]  # best class per box: A (0.72), B (0.40), C (0.35)
    torch.testing.assert_close(standard["scores"], torch.tensor([0.72, 0.40, 0.35]))
    (capped,) = detect_rows(decoded, DetectionConfig(conf_threshold=0.3, max_detections=2))
    torch.testing.assert_close(capped["scores"], torch.tensor([0.72, 0.40]))
    (agnostic,) = detect_rows(decoded, DetectionConfig(conf_threshold=0.3, class_agnostic=True, iou_threshold=0.5))
    torch.testing.assert_close(agnostic["scores"], torch.tensor([0.72, 0.35]))  # A suppresses B across classes
    (multi,) = detect_rows(decoded, DetectionConfig(conf_threshold=0.3, multi_label=True))
    torch.testing.assert_close(multi["scores"], torch.tensor([0.72, 0.45, 0.35]))  # A's class 1 suppresses B
    assert multi["labels"].tolist() == [0, 1, 0]
    (darknet,) = detect_rows(decoded, DetectionConfig(conf_threshold=0.3, max_detections=1, output="darknet"))
    torch.testing.assert_close(darknet["scores"], torch.tensor([0.72, 0.45, 0.35]))  # no cap in Darknet's output


def test_evaluation_settings() -> None:
    assert DetectionConfig(0.001, 0.6, 300, multi_label=True) == EVALUATION_DETECTION
    assert EvalConfig().detection == EVALUATION_DETECTION
    assert EvalConfig(conf_threshold=0.01, max_detections=100).detection == DetectionConfig(
        0.01, 0.6, 100, multi_label=True
    )


def test_the_yaml_keys_stay_and_errors_name_the_file_and_key(tmp_path: Path) -> None:
    config = {"data": {"dataset": {"format": "synthetic", "root": str(tmp_path / "shapes")}},
              "eval": {"conf_threshold": 0.05, "max_detections": 50}}  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_train_config(path).eval.detection == DetectionConfig(0.05, 0.6, 50, multi_label=True)
    with pytest.raises(ConfigError, match=r"config\.yaml: eval: max_detections must be at least 1 .*got 0"):
        load_train_config(path, ["eval.max_detections=0"])
    with pytest.raises(ConfigError, match=r"config\.yaml: eval: conf_threshold must be in \[0, 1\)"):
        load_train_config(path, ["eval.conf_threshold=1.5"])


def test_predictor_takes_a_config_and_keyword_overrides() -> None:
    model = yolov3_tiny_test(num_classes=2)
    predictor = Predictor(model, model.head_specs, (64, 64), detection=DetectionConfig(conf_threshold=0.4),
                          max_detections=7)  # fmt: skip
    assert predictor.detection == DetectionConfig(conf_threshold=0.4, max_detections=7)
    assert (predictor.conf_threshold, predictor.max_detections, predictor.output) == (0.4, 7, "standard")
    assert Predictor(model, model.head_specs, (64, 64)).detection == DetectionConfig()


def test_the_nms_graph_refuses_what_it_does_not_compute() -> None:
    specs = [YoloHeadSpec(anchors_px=((10.0, 14.0),), stride=32, num_classes=2)]
    DetectionPostprocess(specs, (64, 64), NmsOptions(0.3, 0.5, 10))
    for options, named in (
        (DetectionConfig(multi_label=True), "multi_label=True"),
        (DetectionConfig(class_agnostic=True), "class_agnostic=True"),
        (DetectionConfig(output="darknet"), "output='darknet'"),
    ):
        with pytest.raises(ValueError, match=f"NMS graph computes the standard output .*got {named}"):
            DetectionPostprocess(specs, (64, 64), options)
