"""``evaluate`` and ``detect`` on the deployed artifacts: ONNX graphs (fp32, fp16, int8) run by ONNX Runtime,
``.yolov3c`` files decoded on load, and channel-pruned ``.cfg`` + ``.weights``: the numbers and detections of
the PyTorch checkpoint they came from, the backend named; and the errors for files they cannot run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_train import tiny_config

from yolov3 import evaluate
from yolov3.checkpoint import load_checkpoint, model_from_checkpoint
from yolov3.cli import compress
from yolov3.cli.export import main as export_main
from yolov3.compression.masks import prunable_layers
from yolov3.compression.sharing import share_weights
from yolov3.compression.storage import write_compressed
from yolov3.compression.structured import prune_channels
from yolov3.detect import main as detect_main
from yolov3.evaluation.dataset_run import DatasetEvaluationSettings, evaluate_on_dataset, read_data_source
from yolov3.export import export_onnx
from yolov3.inference.model_loading import ModelLoadingError, load_inference_model
from yolov3.inference.onnx_backend import OnnxModelError
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config

CLASS_NAMES = ("circle", "square", "triangle")  # the synthetic shapes
# The NMS IoU threshold of detect, and of evaluate here: the pseudo-labels below are detect's own boxes.
IOU_THRESHOLD = "0.45"


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    data: Path  # a dataset YAML: the synthetic validation images with the checkpoint's own detections as truth
    checkpoint: Path  # last.pt of a 3-epoch run on the synthetic shapes
    images: Path  # the synthetic validation images


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A barely trained yolov3_tiny_test (scores below 0.01: 16 images do not train a detector), and a dataset
    whose labels are its detections over 0.003, which gives it a mAP@0.5 near 0.5: a number that a backend
    computing other heads would move."""
    root = tmp_path_factory.mktemp("trained")
    overrides = {"train.epochs": 3, "eval.every_epochs": 3, "logging.images_every_epochs": 0}
    mapping = tiny_config(root, **overrides, **{"logging.histograms_every_epochs": 0})
    mapping["optimizer"] = {"name": "adamw", "learning_rate": 0.01}
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(mapping))
    build_trainer(load_train_config(config), root / "run", progress=False).fit()
    checkpoint, images = root / "run" / "last.pt", root / "shapes" / "images" / "val"
    arguments = [
        "--weights",
        str(checkpoint),
        "--source",
        str(images),
        "--out",
        str(root / "pseudo"),
        "--conf",
        "0.003",
    ]
    assert detect_main([*arguments, "--iou", IOU_THRESHOLD]) == 0
    split = {"images": str(images), "labels": str(root / "pseudo" / "labels")}
    data = root / "pseudo.yaml"
    data.write_text(yaml.safe_dump({"format": "yolo", "root": str(root), "names": list(CLASS_NAMES), "val": split}))
    return TrainedRun(data, checkpoint, images)


def export(trained: TrainedRun, out: Path, *options: str) -> Path:
    assert export_main(["--weights", str(trained.checkpoint), "--format", "onnx", "--out", str(out), *options]) == 0
    return out


def evaluate_report(trained: TrainedRun, weights: Path, tmp_path: Path, *options: str) -> dict:
    report = tmp_path / f"{weights.name}.json"
    arguments = [
        "--weights",
        str(weights),
        "--data",
        str(trained.data),
        "--json-out",
        str(report),
        "--iou",
        IOU_THRESHOLD,
    ]
    assert evaluate.main([*arguments, *options]) == 0
    return json.loads(report.read_text())


@pytest.mark.slow
def test_onnx_fp32_fp16_int8_evaluate_as_the_checkpoint(
    trained: TrainedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = evaluate_report(trained, trained.checkpoint, tmp_path)
    assert reference["backend"] == "PyTorch" and 0.3 < reference["mAP50"] < 0.7
    fp32 = evaluate_report(trained, export(trained, tmp_path / "fp32.onnx"), tmp_path, "--onnx-threads", "1")
    assert fp32["mAP50"] == pytest.approx(reference["mAP50"], abs=1e-3)
    assert fp32["coco"]["stats"]["AP"] == pytest.approx(reference["coco"]["stats"]["AP"], abs=1e-3)
    assert fp32["backend"].startswith("onnxruntime ") and "(CPUExecutionProvider, fp32, 1 thread)" in fp32["backend"]
    assert "fp32.onnx on" in capsys.readouterr().out  # the summary line names the file and the backend

    fp16 = evaluate_report(trained, export(trained, tmp_path / "fp16.onnx", "--fp16"), tmp_path)
    assert "fp16" in fp16["backend"]
    assert fp16["mAP50"] == pytest.approx(reference["mAP50"], abs=0.01)
    calibration = ["--int8", "--calibration-data", str(trained.images), "--calibration-per-class", "4"]
    int8 = evaluate_report(trained, export(trained, tmp_path / "int8.onnx", *calibration), tmp_path)
    assert "int8 QDQ" in int8["backend"] and int8["mAP50"] == pytest.approx(reference["mAP50"], abs=0.1)
    assert "AP50 (VOC area)" in capsys.readouterr().out  # the same tables


def test_detect_onnx_writes_the_detections_of_the_checkpoint(trained: TrainedRun, tmp_path: Path) -> None:
    onnx_path = export(trained, tmp_path / "model.onnx")
    results = {}
    for weights in (trained.checkpoint, onnx_path):
        out = tmp_path / weights.suffix.lstrip(".")
        arguments = ["--weights", str(weights), "--source", str(trained.images), "--out", str(out), "--conf", "0.001"]
        assert detect_main(arguments) == 0
        results[weights.suffix] = json.loads((out / "detections.json").read_text())
    ours, theirs = results[".pt"], results[".onnx"]
    assert len(ours) == len(theirs) > 0
    key = lambda result: (result["image_id"], -result["score"])  # noqa: E731
    for expected, found in zip(sorted(ours, key=key), sorted(theirs, key=key), strict=True):
        assert (found["image_id"], found["category_id"]) == (expected["image_id"], expected["category_id"])
        np.testing.assert_allclose(found["bbox"], expected["bbox"], atol=0.01)
        assert found["score"] == pytest.approx(expected["score"], abs=2e-6)


def test_static_batch_onnx_runs_any_batch(trained: TrainedRun, tmp_path: Path) -> None:
    static = load_inference_model(export(trained, tmp_path / "static.onnx", "--no-dynamic-batch"))
    dynamic = load_inference_model(export(trained, tmp_path / "dynamic.onnx"))
    assert static.model.fixed_batch == 1 and dynamic.model.fixed_batch is None
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for ours, theirs in zip(static.model(images), dynamic.model(images), strict=True):
            assert ours.shape == (3, 24, *theirs.shape[2:])
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_yolov3c_evaluates_as_the_model_it_decodes_to(trained: TrainedRun, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(trained.checkpoint)
    model = model_from_checkpoint(checkpoint).eval()
    shared = share_weights(model, 4, layers=prunable_layers(model, ("first", "heads")))
    metadata = {
        key: getattr(checkpoint, key) for key in ("class_names", "input_size", "preprocessing", "normalization")
    }
    compressed = tmp_path / "model.yolov3c"
    write_compressed(compressed, model, shared, model_spec=checkpoint.model.to_dict(), metadata=metadata)
    decoded = tmp_path / "decoded.pt"
    assert compress.main(["decode", str(compressed), "--out", str(decoded)]) == 0
    from_file = evaluate_report(trained, compressed, tmp_path)
    assert from_file["backend"] == "PyTorch (yolov3c decoded)"
    assert from_file["mAP50"] == evaluate_report(trained, decoded, tmp_path)["mAP50"]  # the same tensors
    loaded = load_inference_model(compressed)
    assert loaded.class_names == tuple(checkpoint.class_names) and loaded.input_size == (64, 64)


def test_channel_pruned_cfg_and_weights_evaluate(trained: TrainedRun, tmp_path: Path) -> None:
    pruned = prune_channels(model_from_checkpoint(load_checkpoint(trained.checkpoint)).eval(), flops_target=0.6)
    cfg, weights = tmp_path / "pruned.cfg", tmp_path / "pruned.weights"
    pruned.save_darknet_cfg(cfg)
    pruned.save_darknet_weights(weights)
    report = evaluate_report(trained, weights, tmp_path, "--cfg", str(cfg))
    loaded = load_inference_model(weights, cfg=cfg)
    assert loaded.backend == "PyTorch" and loaded.num_classes == 3
    in_memory = dataclasses.replace(loaded, model=pruned)  # the pruned network itself, before it was written
    settings = DatasetEvaluationSettings(iou_threshold=float(IOU_THRESHOLD))
    expected = evaluate_on_dataset(in_memory, read_data_source(trained.data), settings)
    assert report["mAP50"] == pytest.approx(expected.result.map50, abs=1e-6)


def test_files_evaluate_cannot_run_are_refused_by_name(
    trained: TrainedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = model_from_checkpoint(load_checkpoint(trained.checkpoint)).eval()
    bare = export_onnx(model, model.head_specs, tmp_path / "bare.onnx", (64, 64))  # no metadata
    with_nms = export(trained, tmp_path / "nms.onnx", "--with-nms")
    good = export(trained, tmp_path / "good.onnx")
    data = ["--data", str(trained.data)]
    cases = [
        (["--weights", str(bare)], f"{bare}: no yolov3 metadata (head specs); export it with python -m yolov3.export"),
        (["--weights", str(with_nms)], f"{with_nms}: has decoding and NMS in the graph (exported with --with-nms"),
        (["--weights", str(good), "--precision", "bf16"], "runs at the precision it was exported in"),
        (["--weights", str(good), "--img-size", "96"], "exported for 64x64 inputs, not 96x96"),
        (["--weights", str(good), "--cfg", "x.cfg"], f"{good}: an ONNX file names its own model"),
    ]
    for arguments, message in cases:
        assert evaluate.main([*arguments, *data]) == 2, arguments
        assert message in capsys.readouterr().err
    with pytest.raises(OnnxModelError, match="thread count must be at least 1"):
        load_inference_model(good, onnx_threads=0)
    arguments = ["--weights", str(bare), "--source", str(trained.images), "--out", str(tmp_path / "out")]
    assert detect_main(arguments) == 2
    assert "no yolov3 metadata" in capsys.readouterr().err
    with pytest.raises(ModelLoadingError, match="exported for 64x64 inputs, not 96x96"):
        load_inference_model(good).check_input_size((96, 96))
    assert export_main(["--weights", str(good), "--format", "onnx", "--out", str(tmp_path / "again.onnx")]) == 2
    assert f"{good}: is already an ONNX graph" in capsys.readouterr().err
