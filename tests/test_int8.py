"""int8 deployment: quantization-aware training (torch.ao fake quantization in onnxruntime's QDQ int8 scheme),
its export to a QDQ ONNX graph that onnxruntime runs in int8, and post-training calibration on the train split
only. References: torch.ao's own reference int8 model (``convert_to_reference_fx``), batch-norm folding written
out here, and the fp32 model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper
from test_compress_cli import tiny_checkpoint
from test_export import make_model, run_onnx, write_scene_images
from test_train import write_config
from torch.ao.quantization import FakeQuantizeBase, disable_fake_quant

from yolov3 import evaluate
from yolov3.checkpoint import load_checkpoint
from yolov3.cli.export import main as export_main
from yolov3.compression.qat import (
    QatConfig,
    QuantizationAwareDetector,
    fake_quantizers,
    freeze_statistics,
    prepare_qat_detector,
    reference_quantized_model,
)
from yolov3.data.image_io import read_image_rgb
from yolov3.export.int8_qat import deployable_network, export_qat_onnx
from yolov3.export.onnx_export import ExportError, export_onnx
from yolov3.export.quantize import select_calibration_images
from yolov3.inference.preprocess import preprocess
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.models.layers import DARKNET_BN_EPS

INPUT_SIZE = (64, 64)
TINY_CONVS = 13  # yolov3-tiny: 7 backbone convs, 4 neck/head convs, 2 output convs


def scene_batch(directory: Path, count: int = 6) -> torch.Tensor:
    """(count, 3, 64, 64) synthetic shape scenes, preprocessed as at inference."""
    paths = write_scene_images(directory, count, INPUT_SIZE)
    return torch.stack([preprocess(read_image_rgb(path), INPUT_SIZE)[0] for path in paths])


def trained_detector(images: torch.Tensor, keep_float: tuple[str, ...] = ()) -> QuantizationAwareDetector:
    """A QAT yolov3_tiny_test after a few optimizer steps of the YOLO loss on ``images`` (random boxes): ranges
    observed, batch-norm statistics and weights moved since the last forward pass."""
    detector = prepare_qat_detector(make_model("yolov3_tiny_test", num_classes=3), INPUT_SIZE, QatConfig(keep_float))
    generator = torch.Generator().manual_seed(0)
    boxes = torch.rand(len(images), 4, generator=generator) * 0.3 + 0.3
    classes = torch.randint(0, 3, (len(images), 1), generator=generator).float()
    targets = torch.cat([torch.arange(len(images)).float()[:, None], classes, boxes], 1)
    criterion = YoloLoss(detector.head_specs)
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9)
    detector.train()
    for _ in range(3):
        loss = criterion(detector(images), targets, INPUT_SIZE).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return detector.eval()


def output_scales(path: Path) -> list[float]:
    """The quantization scale of each head output (the DequantizeLinear that produces ``head_k``)."""
    graph = onnx.load(str(path)).graph
    initializers = {initializer.name: numpy_helper.to_array(initializer) for initializer in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    return [float(initializers[producers[output.name].input[1]]) for output in graph.output]


def int8_weights(path: Path) -> list[np.ndarray]:
    """The int8 tensors that ``DequantizeLinear`` nodes dequantize (not their zero points), without the zero
    input channel the export adds to the stem's (yolov3.export.image_channel_padding)."""
    graph = onnx.load(str(path)).graph
    dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    producers = {output: node for node in graph.node for output in node.output}
    stem = producers[next(node for node in graph.node if node.op_type == "Conv").input[1]].input[0]
    weights = []
    for item in graph.initializer:
        if item.data_type == onnx.TensorProto.INT8 and item.name in dequantized:
            values = numpy_helper.to_array(item)
            if item.name == stem:
                assert values.shape[1] == 4 and not values[:, 3].any()  # RGB + the padding
                values = values[:, :3]
            weights.append(values)
    return weights


# ---------------------------------------------------------------------------------------------------------------
# QAT: the fake quantization


def test_fake_quantization_follows_the_onnxruntime_scheme() -> None:
    model = make_model("yolov3_tiny_test", num_classes=3)
    detector = prepare_qat_detector(model, INPUT_SIZE)
    assert not any(isinstance(module, FakeQuantizeBase) for module in model.modules())  # a copy was prepared
    weights, activations = fake_quantizers(detector.network)
    assert len(weights) == TINY_CONVS
    for quantizer in weights:
        observer = quantizer.activation_post_process
        assert (quantizer.dtype, quantizer.qscheme, quantizer.ch_axis) == (torch.qint8, torch.per_channel_symmetric, 0)
        assert (observer.quant_min, observer.quant_max) == (-127, 127)
    assert activations and all(
        (quantizer.dtype, quantizer.qscheme) == (torch.quint8, torch.per_tensor_affine)
        and (quantizer.activation_post_process.quant_min, quantizer.activation_post_process.quant_max) == (0, 255)
        for quantizer in activations
    )
    # Only the 2x2 stride-1 pool pads with -inf cells: it stays in float. The five stride-2 pools pool in ceil
    # mode (max_pool2d pads by itself) and are quantized, as onnxruntime's PTQ quantizes them.
    assert detector.float_modules == ("stride32.2",)

    # Weight scales: max |w| / 127 per output channel of the batch-norm folded weights (folding written out here).
    freeze_statistics(detector)  # batch-norm statistics fixed, so the folded weights are those read below
    detector.train()(torch.rand(2, 3, *INPUT_SIZE))
    fused = detector.network.get_submodule("stride16.2.conv")
    bn = fused.bn
    folded = fused.weight * (bn.weight / torch.sqrt(bn.running_var + DARKNET_BN_EPS))[:, None, None, None]
    expected = folded.detach().abs().amax(dim=(1, 2, 3)) / 127
    torch.testing.assert_close(fused.weight_fake_quant.scale, expected, rtol=1e-6, atol=0)
    assert torch.equal(fused.weight_fake_quant.zero_point, torch.zeros_like(fused.weight_fake_quant.zero_point))


def test_keep_float_leaves_the_first_conv_and_the_output_convs_unquantized() -> None:
    detector = prepare_qat_detector(
        make_model("yolov3_tiny_test", num_classes=3), INPUT_SIZE, QatConfig(("first", "heads"))
    )
    assert {"stride16.0", "head_large.1", "head_medium.1"} <= set(detector.float_modules)
    assert len(fake_quantizers(detector.network)[0]) == TINY_CONVS - 3
    for name in ("stride16.0.conv", "head_large.1.conv", "head_medium.1.conv"):
        assert not hasattr(detector.network.get_submodule(name), "weight_fake_quant")
    assert hasattr(detector.network.get_submodule("stride16.2.conv"), "weight_fake_quant")


def test_observers_learn_from_training_batches_only(tmp_path: Path) -> None:
    detector = prepare_qat_detector(make_model("yolov3_tiny_test", num_classes=3), INPUT_SIZE)
    images = scene_batch(tmp_path)
    first = fake_quantizers(detector.network)[1][0]
    initial_scale = first.scale.clone()
    detector.train()(images)
    assert not torch.equal(first.scale, initial_scale)  # the input range was observed
    before = {name: tensor.clone() for name, tensor in detector.state_dict().items()}
    with torch.no_grad():
        detector.eval()(torch.rand(3, 3, *INPUT_SIZE) * 4)  # other images, other ranges
    after = detector.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(bool(quantizer.observer_enabled[0]) for quantizer in fake_quantizers(detector.network)[1])


# ---------------------------------------------------------------------------------------------------------------
# QAT: the exported graph


def test_qat_export_is_the_torch_ao_int8_model_and_onnxruntime_runs_it_in_int8(tmp_path: Path) -> None:
    images = scene_batch(tmp_path / "scenes")
    detector = trained_detector(images)
    path = export_qat_onnx(detector, tmp_path / "qat.onnx", INPUT_SIZE)
    graph = onnx.load(str(path)).graph
    operators = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= operators
    initializer_names = {initializer.name for initializer in graph.initializer}
    quantize_nodes = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    assert not any(node.input[0] in initializer_names for node in quantize_nodes)  # weights stored quantized
    for node in graph.node:  # per-tensor scales are ONNX scalars; per-axis ones have one value per channel
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(a.name == "axis" for a in node.attribute):
            scale = next(item for item in graph.initializer if item.name == node.input[1])
            assert list(scale.dims) == [], node.name

    # The int8 weights are torch.ao's: convert_to_reference_fx folds the batch norms and quantizes the weights.
    reference = reference_quantized_model(detector)
    theirs = [
        module.get_quantized_weight().int_repr().flatten()
        for module in reference.modules()
        if hasattr(module, "get_quantized_weight")
    ]
    assert len(theirs) == TINY_CONVS
    ours = int8_weights(path)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([values.ravel() for values in ours])), np.sort(torch.cat(theirs).numpy())
    )

    # onnxruntime fuses every DequantizeLinear -> Conv -> QuantizeLinear into an integer QLinearConv.
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert optimized.count("QLinearConv") == TINY_CONVS and "Conv" not in optimized

    # Its outputs are those of torch.ao's reference model, up to rounding: an int8 conv takes its bias as int32
    # at scale input scale x weight scale (QLinearConv's definition; onnxruntime quantizes it as it stores the
    # weights) where the reference adds it in float. That moves the rare value sitting at a rounding boundary to
    # the neighbouring level, and such a change propagates: a few output steps at most, a fraction on average.
    held_out = torch.rand(3, 3, *INPUT_SIZE, generator=torch.Generator().manual_seed(5))
    batch = torch.cat([images, held_out])
    with torch.no_grad():
        expected = reference(batch)
        fake_quantized = detector(batch)
    plain = onnxruntime.SessionOptions()
    plain.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # QDQ as float ops
    unfused = onnxruntime.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
    heads = zip(
        run_onnx(path, batch), unfused.run(None, {"images": batch.numpy()}), expected, fake_quantized,
        output_scales(path), strict=True,
    )  # fmt: skip
    for ours_head, unfused_head, reference_head, fake_head, scale in heads:
        # The integer kernels compute what the QDQ graph says, to the level.
        assert np.abs(ours_head - unfused_head).max() <= scale * (1 + 1e-3)
        steps = np.abs(ours_head - reference_head.numpy()) / scale
        assert steps.max() <= 4 + 1e-3 and steps.mean() < 0.5, (steps.max(), steps.mean())
        # The QAT model's own forward (batch norm unfolded, the weight scales of its last training step) is the
        # same model too, to about a step.
        assert (np.abs(ours_head - fake_head.numpy()) / scale).mean() < 1.5

    fp32_model = make_model("yolov3_tiny_test", num_classes=3)
    fp32 = export_onnx(fp32_model, detector.head_specs, tmp_path / "fp32.onnx", INPUT_SIZE)
    weights = sum(module.weight.numel() for module in reference.modules() if hasattr(module, "get_quantized_weight"))
    assert sum(values.size for values in ours) == weights  # one byte per weight
    assert path.stat().st_size < fp32.stat().st_size / 1.8


def test_qat_int8_is_close_to_the_fp32_model_with_the_same_weights(tmp_path: Path) -> None:
    images = scene_batch(tmp_path / "scenes", count=8)
    detector = trained_detector(images)
    detector.train()
    with torch.no_grad():
        for _ in range(3):  # the observers' moving averages settle on these images
            detector(images)
    detector.eval()
    path = export_qat_onnx(detector, tmp_path / "qat.onnx", INPUT_SIZE)
    float_network = deployable_network(detector)
    float_network.apply(disable_fake_quant)  # batch norm folded, no quantization: the fp32 model of these weights
    with torch.no_grad():
        expected = float_network(images)
    for ours, reference, scale in zip(run_onnx(path, images), expected, output_scales(path), strict=True):
        reference = reference.numpy()
        # Each of the ~10 quantized tensors on the way adds up to half a step of rounding; carried to the output
        # they stay within a few output steps on average (a wrong scale or zero point costs tens of steps).
        assert (np.abs(ours - reference) / scale).mean() < 3.0
        assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.98


# ---------------------------------------------------------------------------------------------------------------
# Command line: QAT with the trainer, then evaluate; PTQ calibration


@pytest.mark.slow
def test_cli_qat_fine_tunes_with_the_trainer_and_evaluate_runs_the_int8_graph(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, **{"logging.images_every_epochs": 0, "logging.histograms_every_epochs": 0})
    weights, out, run_dir = tiny_checkpoint(tmp_path / "best.pt"), tmp_path / "model-qat.onnx", tmp_path / "qat"
    arguments = ["--weights", str(weights), "--format", "onnx", "--out", str(out), "--int8", "--qat", "--train-cfg",
                 str(config), "--qat-epochs", "2", "--qat-dir", str(run_dir), "--no-progress"]  # fmt: skip
    caplog.set_level("INFO")
    assert export_main(arguments) == 0
    assert "frozen from epoch 2" in caplog.text  # the last of two epochs trains against frozen ranges
    last = load_checkpoint(run_dir / "last.pt")
    initial = load_checkpoint(weights).model_state
    assert not torch.equal(last.model_state["network.stride16.2.conv.weight"], initial["stride16.2.conv.weight"])
    history = last.history
    assert [entry["epoch"] for entry in history] == [1, 2]

    metadata = {prop.key: prop.value for prop in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["class_names"]) == ["circle", "square", "triangle"]
    report = tmp_path / "report.json"
    assert evaluate.main(["--weights", str(out), "--data", str(config), "--json-out", str(report)]) == 0
    result = json.loads(report.read_text())
    assert "int8 QDQ" in result["backend"] and result["backend"].startswith("onnxruntime ")
    # The trainer validated the fake-quantized model on the same split: the int8 graph scores the same.
    assert result["mAP50"] == pytest.approx(history[-1]["mAP50"], abs=0.02)


def test_cli_qat_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    common = ["--format", "onnx", "--out", str(tmp_path / "q.onnx"), "--int8"]
    with pytest.raises(SystemExit):
        export_main(["--weights", "best.pt", *common, "--qat"])  # no --train-cfg
    assert "--qat needs --int8 and --train-cfg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main(["--weights", "best.pt", *common, "--calibration-data", "images", "--calibration-split", "val"])
    with pytest.raises(SystemExit):
        export_main(["--weights", "best.pt", *common, "--qat", "--train-cfg", str(config), "--calibration-data", "x"])
    assert "--calibration-data goes with --int8 (--qat learns its ranges in training)" in capsys.readouterr().err
    darknet = tmp_path / "model.weights"
    make_model("yolov3_tiny_test", num_classes=3).save_darknet_weights(darknet)
    arguments = ["--weights", str(darknet), "--model", "yolov3_tiny_test", "--num-classes", "3", *common]
    assert export_main([*arguments, "--qat", "--train-cfg", str(config)]) == 2
    assert "--qat fine-tunes a checkpoint of ours (.pt), got model.weights" in capsys.readouterr().err


@pytest.mark.parametrize("split", ["val", "test"])
def test_calibration_refuses_the_images_models_are_scored_on(split: str, tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("format: yolo\nroot: .\nnames: [a]\ntrain: images/train\ntest: images/test\n")
    with pytest.raises(ExportError, match=f"reads the 'train' split only .*, got split '{split}'"):
        select_calibration_images(tmp_path / "data.yaml", per_class=2, split=split)
