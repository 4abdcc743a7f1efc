"""Loading detectors for inference: our checkpoints (EMA weights, class names, input size, preprocessing) and
Darknet weights with a cfg or a registered model name; errors that name the file; ``detect --weights best.pt``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from yolov3.checkpoint import Checkpoint, ModelSpec, save_checkpoint
from yolov3.cli.detect import build_predictor, parse_args
from yolov3.darknet.weights_file import WeightsFileError
from yolov3.detect import main as detect_main
from yolov3.inference import Preprocessing
from yolov3.inference.model_loading import LoadedModel, ModelLoadingError, load_inference_model
from yolov3.models import create_model

INPUT = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))


def seeded_model(seed: int, name: str = "yolov3_tiny_test", num_classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=num_classes).eval()


def outputs(model: nn.Module) -> list[torch.Tensor]:
    with torch.inference_mode():
        return model(INPUT)


def assert_same_outputs(first: nn.Module, second: nn.Module) -> None:
    for ours, theirs in zip(outputs(first), outputs(second), strict=True):
        assert torch.equal(ours, theirs)


def write_checkpoint(path: Path, **entries: object) -> Path:
    """A checkpoint written as a plain dict in the on-disk layout, so that entries can be wrong too."""
    checkpoint = {
        "format": "yolov3-checkpoint",
        "version": 1,
        "model": {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}},
        "model_state": seeded_model(1).state_dict(),
    }
    torch.save({**checkpoint, **entries}, path)
    return path


def test_checkpoint_uses_ema_weights_and_carries_its_inference_settings(tmp_path: Path) -> None:
    ema = seeded_model(2)
    path = write_checkpoint(
        tmp_path / "best.pt",
        ema_state=ema.state_dict(),
        class_names=("circle", "square", "triangle"),
        input_size=(64, 96),
        preprocessing={"letterbox": False, "fill": 0.25},
    )
    loaded = load_inference_model(path)
    assert isinstance(loaded, LoadedModel) and not loaded.model.training
    assert_same_outputs(loaded.model, ema)
    assert loaded.class_names == ("circle", "square", "triangle") and loaded.num_classes == 3
    assert loaded.input_size == (64, 96)
    assert loaded.preprocessing == Preprocessing(letterbox=False, fill=0.25)
    assert [spec.stride for spec in loaded.head_specs] == [32, 16]
    assert "EMA" in loaded.source and str(path) in loaded.source


def test_checkpoint_without_ema_or_settings_uses_the_model_weights_and_defaults(tmp_path: Path) -> None:
    loaded = load_inference_model(write_checkpoint(tmp_path / "last.pt", ema_state=None))
    assert_same_outputs(loaded.model, seeded_model(1))
    assert loaded.class_names is None
    assert loaded.input_size == (416, 416)  # the model config's own
    assert loaded.preprocessing == Preprocessing()


def test_darknet_weights_with_a_cfg_or_a_model_name(tmp_path: Path) -> None:
    model = seeded_model(3)
    weights, cfg = tmp_path / "tiny.weights", tmp_path / "tiny.cfg"
    model.save_darknet_weights(weights)
    model.save_darknet_cfg(cfg)
    from_cfg = load_inference_model(weights, cfg=cfg)
    from_name = load_inference_model(weights, model_name="yolov3_tiny_test", num_classes=3)
    for loaded in (from_cfg, from_name):
        assert_same_outputs(loaded.model, model)
        assert loaded.class_names is None and loaded.preprocessing == Preprocessing.from_mode("darknet")
        assert loaded.input_size == (416, 416)
        assert [spec.anchors_px for spec in loaded.head_specs] == [spec.anchors_px for spec in model.head_specs]
    assert type(from_cfg.model).__name__ == "Darknet" and type(from_name.model).__name__ == "YOLOv3Tiny"


def test_errors_name_the_file(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "best.pt")
    weights = tmp_path / "tiny.weights"
    seeded_model(0).save_darknet_weights(weights)
    cases = [
        (dict(weights=tmp_path / "nope.pt"), "nope.pt: no such weights file"),
        (dict(weights=tmp_path), "not a file"),
        (dict(weights=checkpoint, model_name="yolov3"), "best.pt: a checkpoint names its own model"),
        (dict(weights=weights), "tiny.weights: Darknet weights need exactly one of a cfg file or a registered model"),
        (dict(weights=weights, cfg=tmp_path / "missing.cfg"), "missing.cfg: no such cfg file"),
        (dict(weights=weights, cfg=tmp_path / "x.cfg", num_classes=3), "x.cfg: a cfg sets its own classes"),
    ]
    for arguments, message in cases:
        with pytest.raises(ModelLoadingError, match=message.replace(".", r"\.")):
            load_inference_model(**arguments)
    with pytest.raises(WeightsFileError, match=r"tiny\.weights"):  # 3 classes saved, 80 expected
        load_inference_model(weights, model_name="yolov3_tiny_test", num_classes=80)
    with pytest.raises(KeyError, match="did you mean 'yolov3_tiny_test'"):
        load_inference_model(weights, model_name="yolov3_tiny_tset")
    with pytest.raises(ModelLoadingError, match=r"mobilenet.*no Darknet form"):
        load_inference_model(weights, model_name="yolov3_mobilenet_v3_small")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"class_names": ["a", "b"]}, "'class_names' has 2 names but the model has 3 classes"),
        ({"input_size": "416"}, "'input_size' must be \\(height, width\\) integers"),
        ({"preprocessing": {"letterbox": True, "mean": 0.5}}, "'preprocessing' has unknown key 'mean'"),
        ({"preprocessing": {"fill": 2.0}}, "'preprocessing': Preprocessing.fill must be in 0..1"),
        ({"model": {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 5}}}, "weights do not fit model"),
        ({"model": {"name": "yolo_tiny_test"}}, "unknown model 'yolo_tiny_test'"),
        ({"model": "yolov3_tiny_test"}, "checkpoint lacks 'model' \\{name, kwargs\\}"),
    ],
    ids=["names", "size", "preprocessing-key", "fill", "state", "model-name", "model-entry"],
)
def test_bad_checkpoint_entries_name_the_file_and_key(entries: dict, message: str, tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "bad.pt", **entries)
    with pytest.raises(ModelLoadingError, match=f"bad\\.pt: .*{message}"):
        load_inference_model(path)


def test_classifier_checkpoint_is_not_a_detector(tmp_path: Path) -> None:
    path = tmp_path / "classifier.pt"
    state = create_model("darknet53_test").state_dict()
    save_checkpoint(path, Checkpoint(ModelSpec("darknet53_test"), state))
    with pytest.raises(ModelLoadingError, match=r"classifier\.pt: not a detector"):
        load_inference_model(path)
    (tmp_path / "foreign.pt").write_bytes(b"not a checkpoint")
    refused = r"foreign\.pt: not a (readable checkpoint|checkpoint this library wrote)"
    with pytest.raises(ModelLoadingError, match=refused):
        load_inference_model(tmp_path / "foreign.pt")


def test_detect_runs_from_a_checkpoint_with_its_names_and_size(tmp_path: Path) -> None:
    names = ("circle", "square", "triangle")
    path = write_checkpoint(tmp_path / "best.pt", class_names=names, input_size=(64, 96))
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.png"), image)
    arguments = ["--weights", str(path), "--source", str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
    predictor = build_predictor(parse_args([*arguments, "--no-letterbox"]))
    assert predictor.class_names == list(names) and predictor.input_size == (64, 96)
    assert predictor.preprocessing == Preprocessing(letterbox=False)
    assert detect_main([*arguments, "--conf", "0.1"]) == 0
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert results and {result["category_id"] for result in results} <= {0, 1, 2}
    assert detect_main([*arguments, "--cfg", "x.cfg"]) == 2  # a checkpoint takes no cfg
