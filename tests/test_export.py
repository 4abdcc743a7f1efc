"""Export: ONNX (raw heads and with NMS; fp32, fp16, int8) checked with onnx.checker and run in ONNX Runtime
against PyTorch and ``postprocess``; Darknet round trips; the ``python -m yolov3.export`` CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from yolov3.checkpoint import Checkpoint, ModelSpec, save_checkpoint
from yolov3.cli.export import main
from yolov3.darknet.cfg import parse_cfg
from yolov3.data.image_io import read_image_rgb
from yolov3.data.shapes import SceneOptions, draw_scene
from yolov3.export import (
    CalibrationImages,
    NmsOptions,
    attach_postprocess,
    convert_to_fp16,
    export_darknet,
    export_onnx,
    export_postprocess,
    inference_metadata,
    quantize_int8,
    select_calibration_images,
)
from yolov3.export.onnx_export import ExportError
from yolov3.inference import Predictor, Preprocessing, decode_outputs, postprocess, preprocess
from yolov3.inference.predictor import model_head_specs
from yolov3.models import Darknet, create_model

INPUT_SIZE = (96, 128)  # (height, width): not square, so that height and width cannot be swapped unnoticed
CONF_THRESHOLD, IOU_THRESHOLD = 0.2, 0.45


def randomize_parameters(model: nn.Module, seed: int = 0) -> nn.Module:
    """Kaiming-normal conv weights (outputs that depend on the input) and non-trivial BatchNorm statistics and
    affine parameters (so that folding them into the convs is exercised); returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(channels, generator=generator) * 1.5 + 0.25)
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(channels, generator=generator) * 0.2)
    return model.eval()


def make_model(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_parameters(create_model(name, **kwargs), seed)


def make_images(batch: int, size: tuple[int, int] = INPUT_SIZE, seed: int = 1) -> torch.Tensor:
    """(B, 3, H, W) in 0..1, each image different in kind: noise, a smooth gradient, flat grey, ..."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    ramp = torch.linspace(0, 1, width).expand(3, height, width)
    kinds = [torch.rand(3, height, width, generator=generator), ramp, torch.full((3, height, width), 0.5)]
    return torch.stack([kinds[index % len(kinds)] for index in range(batch)])


def run_onnx(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def relative_error(ours: list[np.ndarray], reference: list[torch.Tensor]) -> float:
    scale = max(head.abs().max().item() for head in reference)
    return max(np.abs(a - b.numpy()).max() for a, b in zip(ours, reference, strict=True)) / scale


def write_scene_images(directory: Path, count: int, size: tuple[int, int] = INPUT_SIZE) -> list[Path]:
    """``count`` synthetic shape scenes as PNGs: realistic enough activations for calibration."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        image, _ = draw_scene(rng, size, SceneOptions())
        paths.append(directory / f"scene_{index}.png")
        assert cv2.imwrite(str(paths[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return paths


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    return make_model("yolov3_tiny_test", num_classes=3)


@pytest.fixture(scope="module")
def raw_onnx(tiny_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_model, model_head_specs(tiny_model), path, INPUT_SIZE)


# ---------------------------------------------------------------------------------------------------------------
# fp32 raw heads


@pytest.mark.parametrize("name", ["yolov3_tiny_test", pytest.param("yolov3_test", marks=pytest.mark.slow)])
def test_raw_heads_match_pytorch_at_batch_1_and_3(name: str, tmp_path: Path) -> None:
    model = make_model(name, num_classes=3)
    path = export_onnx(model, model_head_specs(model), tmp_path / "model.onnx", INPUT_SIZE)
    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path)).graph
    assert [output.name for output in graph.output] == [f"head_{i}" for i in range(len(model_head_specs(model)))]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)  # folded into the convs
    for batch in (1, 3):
        images = make_images(batch)
        with torch.inference_mode():
            reference = model(images)
        outputs = run_onnx(path, images)
        assert [output.shape for output in outputs] == [tuple(head.shape) for head in reference]
        assert relative_error(outputs, reference) < 1e-4


def test_static_batch_and_bad_arguments(tiny_model: nn.Module, tmp_path: Path) -> None:
    specs = model_head_specs(tiny_model)
    training = make_model("yolov3_tiny_test", num_classes=3).train()
    path = export_onnx(training, specs, tmp_path / "static.onnx", INPUT_SIZE, dynamic_batch=False)
    assert training.training  # exported in eval mode, its mode given back
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    with torch.inference_mode():
        reference = training.eval()(make_images(1))
    assert relative_error(run_onnx(path, make_images(1)), reference) < 1e-4  # running statistics, not batch ones
    with pytest.raises(ExportError, match="input size 100x128 must be a positive multiple of the stride 32"):
        export_onnx(tiny_model, specs, tmp_path / "bad.onnx", (100, 128))
    with pytest.raises(ExportError, match="opset 13 is too old"):
        export_onnx(tiny_model, specs, tmp_path / "bad.onnx", INPUT_SIZE, opset=13)
    with pytest.raises(ValueError, match="max_detections must be at least 1"):
        NmsOptions(max_detections=0)
    assert not (tmp_path / "bad.onnx").exists()


# ---------------------------------------------------------------------------------------------------------------
# decode + NMS in the graph


@pytest.mark.parametrize("truncate", [False, True], ids=["all-kept", "truncated"])
def test_nms_graph_gives_the_detections_of_postprocess(tiny_model: nn.Module, truncate: bool, tmp_path: Path) -> None:
    specs = model_head_specs(tiny_model)
    images = make_images(3)
    with torch.inference_mode():
        decoded = decode_outputs(tiny_model(images), specs, INPUT_SIZE)
    untruncated = [len(found["scores"]) for found in postprocess(decoded, CONF_THRESHOLD, IOU_THRESHOLD)]
    assert len(set(untruncated)) == 3 and min(untruncated) > 0  # the images differ: per-image slots are exercised
    max_detections = sorted(untruncated)[1] if truncate else 300  # truncated: one image below, one above the cap
    path = export_onnx(
        tiny_model,
        specs,
        tmp_path / "nms.onnx",
        INPUT_SIZE,
        nms=NmsOptions(CONF_THRESHOLD, IOU_THRESHOLD, max_detections),
    )
    onnx.checker.check_model(str(path))
    assert "NonMaxSuppression" in {node.op_type for node in _all_nodes(onnx.load(str(path)).graph)}
    boxes, scores, labels, counts = run_onnx(path, images)
    assert boxes.shape == (3, max_detections, 4) and scores.shape == labels.shape == (3, max_detections)
    assert labels.dtype == counts.dtype == np.int64
    predictor = Predictor(tiny_model, specs, INPUT_SIZE, conf_threshold=CONF_THRESHOLD, max_detections=max_detections)
    expected = predictor.predict_batch(images)
    assert counts.tolist() == [len(detections["scores"]) for detections in expected]
    assert counts.tolist() == [min(count, max_detections) for count in untruncated]
    for image, detections in enumerate(expected):
        count = counts[image]
        np.testing.assert_allclose(boxes[image, :count], detections["boxes"].numpy(), rtol=0, atol=1e-3)
        np.testing.assert_allclose(scores[image, :count], detections["scores"].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(labels[image, :count], detections["labels"].numpy())
        assert (boxes[image, count:] == 0).all() and (scores[image, count:] == 0).all()
        assert (labels[image, count:] == -1).all()
    single = run_onnx(path, images[1:2])  # batch 1 gives image 1's detections of the batch of 3
    np.testing.assert_allclose(single[0][0], boxes[1], rtol=0, atol=1e-4)
    assert single[3].tolist() == [counts[1]]


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes of a graph and of its subgraphs (``If`` branches)."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attribute.g))
    return nodes


# ---------------------------------------------------------------------------------------------------------------
# fp16 and int8


def test_fp16_runs_with_float32_io_and_matches(raw_onnx: Path, tiny_model: nn.Module, tmp_path: Path) -> None:
    path = convert_to_fp16(raw_onnx, tmp_path / "fp16.onnx")
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {output.type.tensor_type.elem_type for output in model.graph.output} == {onnx.TensorProto.FLOAT}
    conv_weights = {node.input[1] for node in model.graph.node if node.op_type == "Conv"}
    assert {init.data_type for init in model.graph.initializer if init.name in conv_weights} == {
        onnx.TensorProto.FLOAT16
    }
    images = make_images(3)
    with torch.inference_mode():
        reference = tiny_model(images)
    assert relative_error(run_onnx(path, images), reference) < 1e-2


def test_fp16_with_nms_appends_float32_postprocessing(raw_onnx: Path, tiny_model: nn.Module, tmp_path: Path) -> None:
    specs = model_head_specs(tiny_model)
    options = NmsOptions(CONF_THRESHOLD, IOU_THRESHOLD, 100)
    fp16_heads = convert_to_fp16(raw_onnx, tmp_path / "fp16.onnx")
    postprocess_graph = export_postprocess(specs, tmp_path / "postprocess.onnx", INPUT_SIZE, options)
    fp16 = attach_postprocess(fp16_heads, postprocess_graph, tmp_path / "fp16-nms.onnx")
    onnx.checker.check_model(str(fp16))
    images = make_images(3)
    boxes, scores, labels, counts = run_onnx(fp16, images)
    # Exactly postprocess() on the fp16 heads: the appended decoding and NMS run in float32.
    heads = [torch.from_numpy(head) for head in run_onnx(fp16_heads, images)]
    expected = postprocess(decode_outputs(heads, specs, INPUT_SIZE), CONF_THRESHOLD, IOU_THRESHOLD, 100)
    for image, detections in enumerate(expected):
        assert counts[image] == len(detections["scores"]) > 0
        np.testing.assert_allclose(boxes[image, : counts[image]], detections["boxes"].numpy(), rtol=0, atol=1e-3)
        np.testing.assert_array_equal(labels[image, : counts[image]], detections["labels"].numpy())
    # ... and close to fp32: the strongest detection of each image is the same, its box within a pixel.
    reference = run_onnx(export_onnx(tiny_model, specs, tmp_path / "fp32-nms.onnx", INPUT_SIZE, nms=options), images)
    np.testing.assert_array_equal(labels[:, 0], reference[2][:, 0])
    np.testing.assert_allclose(boxes[:, 0], reference[0][:, 0], atol=1.0)
    np.testing.assert_allclose(scores[:, 0], reference[1][:, 0], atol=1e-2)
    with pytest.raises(ExportError, match="has decoding and NMS in the graph"):
        convert_to_fp16(tmp_path / "fp32-nms.onnx", tmp_path / "refused.onnx")


@pytest.mark.slow
def test_int8_is_four_times_smaller_and_correlates(tmp_path: Path) -> None:
    model = make_model("yolov3_tiny", num_classes=80)  # full width: weights dominate the file
    size = (160, 160)
    fp32 = export_onnx(model, model_head_specs(model), tmp_path / "fp32.onnx", size)
    calibration = CalibrationImages(write_scene_images(tmp_path / "calibration", 4, size), "images", size)
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", calibration)
    onnx.checker.check_model(str(int8))
    ratio = fp32.stat().st_size / int8.stat().st_size
    assert 3.6 < ratio < 4.2
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in onnx.load(str(int8)).graph.node}
    held_out = read_image_rgb(write_scene_images(tmp_path / "held_out", 5, size)[-1])  # not calibrated on
    batch = preprocess(held_out, size)[0][None]  # (3, H, W) -> (1, 3, H, W)
    for ours, reference in zip(run_onnx(int8, batch), run_onnx(fp32, batch), strict=True):
        assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.98


def test_calibration_images_per_class_from_a_dataset(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    (tmp_path / "data.yaml").write_text(
        "format: synthetic\nroot: shapes\nsynthetic: {num_train: 24, num_val: 4, image_size: [64, 64], "
        "formats: [yolo], read_as: yolo, max_objects: 2}\n"
    )
    chosen = select_calibration_images(tmp_path / "data.yaml", per_class=2)
    assert 2 <= len(chosen) <= 6 and len(set(chosen)) == len(chosen)
    per_class = np.zeros(3, dtype=int)
    for path in chosen:
        label_file = root / "labels" / "train" / f"{path.stem}.txt"
        per_class[np.unique([int(line.split()[0]) for line in label_file.read_text().splitlines()])] += 1
    assert (per_class >= 2).all()
    assert select_calibration_images(tmp_path / "data.yaml", per_class=2) == chosen  # deterministic
    directory_images = select_calibration_images(root / "images" / "val", per_class=3)
    assert [path.name for path in directory_images] == ["000000.png", "000001.png", "000002.png"]
    with pytest.raises(ExportError, match="no calibration images"):
        select_calibration_images(root, per_class=3)
    with pytest.raises(ExportError, match="must be a dataset YAML or a directory of images"):
        select_calibration_images(tmp_path / "missing.txt", per_class=3)


# ---------------------------------------------------------------------------------------------------------------
# Darknet


def test_darknet_round_trip_gives_identical_outputs(tiny_model: nn.Module, tmp_path: Path) -> None:
    files = export_darknet(tiny_model, tmp_path / "exported" / "model.weights", class_names=["a", "b", "c"])
    assert files.names.read_text() == "a\nb\nc\n"
    reloaded = Darknet(files.cfg)
    reloaded.load_darknet_weights(files.weights)
    images = make_images(2)
    with torch.inference_mode():
        for ours, theirs in zip(tiny_model(images), reloaded.eval()(images), strict=True):
            torch.testing.assert_close(theirs, ours, rtol=1e-6, atol=1e-6)
    resized = export_darknet(tiny_model, tmp_path / "resized", input_size=(320, 608))
    assert (parse_cfg(resized.cfg).net.height, parse_cfg(resized.cfg).net.width) == (320, 608)
    assert resized.names is None


def test_mobilenet_has_no_darknet_form(tmp_path: Path) -> None:
    model = create_model("yolov3_mobilenet_v3_small", num_classes=3)
    with pytest.raises(ExportError, match=r"mobilenet_v3_small.*no Darknet cfg form.*model\.cfg"):
        export_darknet(model, tmp_path / "model")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------------
# The CLI


@pytest.fixture(scope="module")
def checkpoint(tiny_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("checkpoint") / "best.pt"
    save_checkpoint(
        path,
        Checkpoint(
            model=ModelSpec("yolov3_tiny_test", {"num_classes": 3}),
            model_state=create_model("yolov3_tiny_test", num_classes=3).state_dict(),
            ema_state=tiny_model.state_dict(),
            class_names=("circle", "square", "triangle"),
            input_size=(INPUT_SIZE[0], INPUT_SIZE[1]),
            preprocessing={"letterbox": True, "fill": 0.5},
        ),
    )
    return path


def test_cli_onnx_with_nms_from_a_checkpoint(checkpoint: Path, tiny_model: nn.Module, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.onnx"
    assert main(["--weights", str(checkpoint), "--format", "onnx", "--out", str(out), "--with-nms"]) == 0
    assert f"{out} (" in capsys.readouterr().out
    model = onnx.load(str(out))
    metadata = {prop.key: json.loads(prop.value) for prop in model.metadata_props}
    assert metadata["class_names"] == ["circle", "square", "triangle"]
    assert metadata["input_size"] == list(INPUT_SIZE)  # the checkpoint's size
    assert metadata["nms"] == {"conf_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 300}
    assert metadata == {
        key: json.loads(value)
        for key, value in inference_metadata(
            model_head_specs(tiny_model),
            INPUT_SIZE,
            Preprocessing(),
            metadata["class_names"],
            NmsOptions(),
            source_format="checkpoint",
        ).items()
    }
    assert [output.name for output in model.graph.output] == ["boxes", "scores", "labels", "num_detections"]


def test_cli_fp16_int8_and_darknet(checkpoint: Path, tmp_path: Path, capsys) -> None:
    common = ["--weights", str(checkpoint), "--img-size", "64"]
    assert main([*common, "--format", "onnx", "--fp16", "--out", str(tmp_path / "fp16.onnx")]) == 0
    calibration = write_scene_images(tmp_path / "calibration", 2, (64, 64))[0].parent
    int8 = ["--int8", "--calibration-data", str(calibration), "--calibration-per-class", "2"]
    assert main([*common, "--format", "onnx", *int8, "--out", str(tmp_path / "int8.onnx")]) == 0
    for name in ("fp16.onnx", "int8.onnx"):
        outputs = run_onnx(tmp_path / name, make_images(2, (64, 64)))
        assert [output.shape[:2] for output in outputs] == [(2, 24), (2, 24)]
    assert main([*common, "--format", "onnx", *int8, "--with-nms", "--out", str(tmp_path / "int8-nms.onnx")]) == 0
    int8_nms = onnx.load(str(tmp_path / "int8-nms.onnx"))
    assert json.loads({prop.key: prop.value for prop in int8_nms.metadata_props}["nms"])["max_detections"] == 300
    boxes, _, _, counts = run_onnx(tmp_path / "int8-nms.onnx", make_images(2, (64, 64)))
    assert boxes.shape == (2, 300, 4) and counts.shape == (2,)
    assert main([*common, "--format", "darknet", "--out", str(tmp_path / "dk" / "model")]) == 0
    assert sorted(path.name for path in (tmp_path / "dk").iterdir()) == ["model.cfg", "model.names", "model.weights"]
    assert parse_cfg(tmp_path / "dk" / "model.cfg").net.width == 64
    assert capsys.readouterr().out.count("exported yolov3_tiny_test from checkpoint") == 4


def test_cli_darknet_weights_with_a_model_name(tiny_model: nn.Module, tmp_path: Path) -> None:
    weights = tmp_path / "tiny.weights"
    tiny_model.save_darknet_weights(weights)
    out = tmp_path / "tiny.onnx"
    arguments = ["--weights", str(weights), "--model", "yolov3_tiny_test", "--num-classes", "3"]
    assert main([*arguments, "--format", "onnx", "--out", str(out), "--img-size", "96", "128"]) == 0
    with torch.inference_mode():
        reference = tiny_model(make_images(1))
    assert relative_error(run_onnx(out, make_images(1)), reference) < 1e-4


def test_cli_errors_name_the_file(checkpoint: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.weights"
    assert main(["--weights", str(missing), "--model", "yolov3_tiny", "--format", "onnx", "--out", "x.onnx"]) == 2
    assert f"{missing}: no such weights file" in capsys.readouterr().err
    mobilenet = tmp_path / "mobilenet.pt"
    model = create_model("yolov3_mobilenet_v3_small", num_classes=3)
    save_checkpoint(
        mobilenet, Checkpoint(ModelSpec("yolov3_mobilenet_v3_small", {"num_classes": 3}), model.state_dict())
    )
    assert main(["--weights", str(mobilenet), "--format", "darknet", "--out", str(tmp_path / "m")]) == 2
    error = capsys.readouterr().err
    assert "no Darknet cfg form" in error and str(tmp_path / "m.cfg") in error
    assert main(["--weights", str(checkpoint), "--cfg", "x.cfg", "--format", "onnx", "--out", "x.onnx"]) == 2
    assert "a checkpoint names its own model" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    arguments = ["--weights", str(checkpoint), "--format", "onnx", "--out", str(tmp_path / "q.onnx"), "--int8"]
    assert main([*arguments, "--calibration-data", str(empty)]) == 2
    assert f"{empty}: no calibration images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(arguments)  # --int8 without --calibration-data
    assert "--int8 needs --calibration-data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--weights", str(checkpoint), "--format", "darknet", "--out", "x", "--with-nms"])
    assert "apply to --format onnx only" in capsys.readouterr().err


@pytest.mark.slow
def test_real_yolov3_tiny_with_nms_finds_what_the_predictor_finds(
    shared_darknet: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "yolov3-tiny.onnx"
    arguments = ["--cfg", str(shared_darknet / "yolov3-tiny.cfg"), "--weights", str(tiny_weights)]
    assert main([*arguments, "--format", "onnx", "--out", str(out), "--with-nms", "--max-det", "100"]) == 0
    predictor = Predictor.from_darknet(shared_darknet / "yolov3-tiny.cfg", tiny_weights)
    images = [read_image_rgb(shared_darknet / "images" / name) for name in ("dog.jpg", "horses.jpg")]
    batch, _ = predictor.preprocess(images)  # (2, 3, 416, 416), letterboxed
    boxes, scores, labels, counts = run_onnx(out, batch)
    for image, expected in enumerate(predictor.predict_batch(batch)):
        assert counts[image] == len(expected["scores"]) >= 3
        np.testing.assert_allclose(boxes[image, : counts[image]], expected["boxes"].numpy(), rtol=0, atol=1e-2)
        np.testing.assert_allclose(scores[image, : counts[image]], expected["scores"].numpy(), rtol=0, atol=1e-4)
        np.testing.assert_array_equal(labels[image, : counts[image]], expected["labels"].numpy())
    assert {16, 1} <= set(labels[0, : counts[0]].tolist())  # dog and bicycle in dog.jpg
