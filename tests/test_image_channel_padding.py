"""Int8 graphs read the image as 4 channels (yolov3.export.image_channel_padding): same outputs, padded stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper
from test_export import make_model, run_onnx, write_scene_images

from yolov3.export import image_channel_padding, quantize
from yolov3.export.image_channel_padding import pad_image_channels
from yolov3.export.onnx_export import export_onnx
from yolov3.export.quantize import CalibrationImages, quantize_int8
from yolov3.inference.predictor import model_head_specs

SIZE = (64, 64)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fp32 graph of a yolov3_tiny_test, and its PTQ int8 graph without and with the padding."""
    folder = tmp_path_factory.mktemp("padding")
    model = make_model("yolov3_tiny_test", num_classes=3)
    fp32 = export_onnx(model, model_head_specs(model), folder / "fp32.onnx", SIZE)
    calibration = CalibrationImages(write_scene_images(folder / "calibration", 4, SIZE), "images", SIZE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize, "pad_image_channels_file", lambda path: [])
        unpadded = quantize_int8(fp32, folder / "unpadded.onnx", calibration)
    calibration.rewind()
    padded = quantize_int8(fp32, folder / "padded.onnx", calibration)
    return {"fp32": fp32, "unpadded": unpadded, "padded": padded}


def stem_weight(path: Path) -> np.ndarray:
    model = onnx.load(str(path))
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    conv = next(node for node in model.graph.node if node.op_type == "Conv")  # the first: the stem
    return numpy_helper.to_array(initializers[producers[conv.input[1]].input[0]])


def test_the_int8_export_pads_the_stem_weights_and_the_image_with_zeros(graphs: dict[str, Path]) -> None:
    before, after = stem_weight(graphs["unpadded"]), stem_weight(graphs["padded"])
    assert before.shape[1] == 3 and after.shape[1] == 4 and after.dtype == np.int8
    np.testing.assert_array_equal(after[:, :3], before)
    assert not after[:, 3].any()
    nodes = onnx.load(str(graphs["padded"])).graph.node
    pad = next(node for node in nodes if node.op_type == "Pad")
    quantize_node = next(node for node in nodes if node.op_type == "QuantizeLinear" and node.input[0] == pad.output[0])
    assert pad.input[0] == "images" and quantize_node is not None


def test_padded_outputs_are_bit_identical_and_every_conv_still_runs_in_int8(
    graphs: dict[str, Path], tmp_path: Path
) -> None:
    images = torch.rand(3, 3, *SIZE, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1  # past the range too
    for padded, unpadded in zip(run_onnx(graphs["padded"], images), run_onnx(graphs["unpadded"], images), strict=True):
        np.testing.assert_array_equal(padded, unpadded)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(graphs["padded"]), options, providers=["CPUExecutionProvider"])
    optimized = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "Conv" not in optimized and optimized.count("QLinearConv") == 13  # yolov3-tiny's 13 convs


def test_graphs_without_a_quantized_image_are_left_as_they_are(graphs: dict[str, Path]) -> None:
    for name in ("fp32", "padded"):  # float: no QuantizeLinear on the image; padded: already 4 channels
        model = onnx.load(str(graphs[name]))
        serialized = model.SerializeToString()
        assert pad_image_channels(model) == []
        assert model.SerializeToString() == serialized
    assert image_channel_padding.CHANNEL_GROUP == 4
