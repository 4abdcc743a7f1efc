"""Our Darknet models against OpenCV's independent Darknet importer, and native models against cfg-built ones.

For every official cfg in ../shared/darknet, a random-valued ``.weights`` file written in Darknet layout
(by the test, not by our writer) is loaded by both. We compare the raw head outputs: the conv feeding each
[yolo] layer (OpenCV's [yolo] layer thresholds and runs NMS), or the classifier conv before [softmax].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from darknet_testing import relative_error, write_random_weights

from yolov3.darknet.cfg import SoftmaxSection, YoloSection, parse_cfg
from yolov3.models import Darknet, create_model

cv2 = pytest.importorskip("cv2")

OFFICIAL_CFGS = (
    "yolov3.cfg",
    "yolov3-tiny.cfg",
    "yolov3-spp.cfg",
    "yolov3-voc.cfg",
    "darknet53.cfg",
    "darknet53_448.cfg",
)
SIZES = ((416, 416), (320, 608))  # (height, width): square, and a non-square one

# Native builder (and arguments) equivalent to each official cfg.
NATIVE = {
    "yolov3.cfg": ("yolov3", {}),
    "yolov3-tiny.cfg": ("yolov3_tiny", {}),
    "yolov3-spp.cfg": ("yolov3_spp", {}),
    "yolov3-voc.cfg": ("yolov3", {"num_classes": 20}),
    "darknet53.cfg": ("darknet53", {}),
    "darknet53_448.cfg": ("darknet53", {}),
}


@pytest.fixture(scope="module")
def random_weights(shared_darknet: Path, tmp_path_factory: pytest.TempPathFactory):
    """cfg name -> (cfg path, random weights path), written once per module."""
    directory = tmp_path_factory.mktemp("random-weights")
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            cfg_path = shared_darknet / name
            weights_path = directory / (Path(name).stem + ".weights")
            write_random_weights(parse_cfg(cfg_path), weights_path, seed=len(cache))
            cache[name] = (cfg_path, weights_path)
        return cache[name]

    return get


def head_layer_indices(model: Darknet) -> list[int]:
    """The layer feeding each [yolo] (detectors) or the [softmax] (classifiers)."""
    return [index - 1 for index, s in enumerate(model.cfg.layers) if isinstance(s, (YoloSection, SoftmaxSection))]


@pytest.mark.slow
@pytest.mark.parametrize("cfg_name", OFFICIAL_CFGS)
def test_forward_matches_opencv(cfg_name: str, random_weights) -> None:
    cfg_path, weights_path = random_weights(cfg_name)
    model = Darknet(cfg_path)
    model.load_darknet_weights(weights_path)
    model.eval()
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    layer_names = [f"conv_{index}" for index in head_layer_indices(model)]
    assert set(layer_names) <= set(net.getLayerNames())
    rng = np.random.default_rng(7)
    for height, width in SIZES:
        image = rng.uniform(0.0, 1.0, (1, 3, height, width)).astype(np.float32)
        with torch.no_grad():
            ours = [output.numpy() for output in model(torch.from_numpy(image))]
        net.setInput(image)
        references = net.forward(layer_names)
        assert len(ours) == len(references) == len(layer_names)
        for output, reference in zip(ours, references, strict=True):
            reference = reference.reshape(output.shape)
            assert relative_error(output, reference) <= 1e-4, (cfg_name, height, width)
        if not model.is_detector:  # the classifier's probabilities too
            probabilities = net.forward(net.getLayerNames()[-1]).reshape(-1)
            np.testing.assert_allclose(torch.softmax(torch.from_numpy(ours[0]), 1).numpy()[0], probabilities, atol=1e-6)
        else:
            strides = [height // output.shape[2] for output in ours]
            assert strides == [32, 16, 8][: len(ours)]


@pytest.mark.slow
@pytest.mark.parametrize("cfg_name", OFFICIAL_CFGS)
def test_native_model_equals_cfg_built(cfg_name: str, random_weights) -> None:
    cfg_path, weights_path = random_weights(cfg_name)
    builder, kwargs = NATIVE[cfg_name]
    native, built = create_model(builder, **kwargs), Darknet(cfg_path)
    native.load_darknet_weights(weights_path)
    built.load_darknet_weights(weights_path)
    native.eval(), built.eval()
    image = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        native_outputs, built_outputs = native(image), built(image)
    assert [o.shape for o in native_outputs] == [o.shape for o in built_outputs]
    for native_output, built_output in zip(native_outputs, built_outputs, strict=True):
        assert relative_error(native_output.numpy(), built_output.numpy()) <= 1e-5


@pytest.mark.slow
def test_real_tiny_weights_match_opencv_and_resave_byte_identical(
    tiny_weights: Path, shared_darknet: Path, tmp_path: Path
) -> None:
    cfg_path = shared_darknet / "yolov3-tiny.cfg"
    model = Darknet(cfg_path)
    header = model.load_darknet_weights(tiny_weights)  # strict: raises if a single float is left over
    assert (header.major, header.minor, header.revision, header.seen) == (0, 2, 0, 32013312)
    assert sum(p.num_floats for p in model.darknet_conv_parameters()) == 8_858_734
    resaved = tmp_path / "resaved.weights"
    model.save_darknet_weights(resaved)
    assert resaved.read_bytes() == tiny_weights.read_bytes()

    native = create_model("yolov3_tiny")
    native.load_darknet_weights(tiny_weights)
    native_resaved = tmp_path / "native.weights"
    native.save_darknet_weights(native_resaved)
    assert native_resaved.read_bytes() == tiny_weights.read_bytes()

    image = cv2.imread(str(shared_darknet / "images" / "dog.jpg"))
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (416, 416), swapRB=True, crop=False)
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(tiny_weights))
    net.setInput(blob)
    references = net.forward(["conv_15", "conv_22"])
    model.eval(), native.eval()
    with torch.no_grad():
        outputs, native_outputs = model(torch.from_numpy(blob)), native(torch.from_numpy(blob))
    for output, native_output, reference in zip(outputs, native_outputs, references, strict=True):
        assert relative_error(output.numpy(), reference.reshape(output.shape)) <= 1e-4
        assert relative_error(native_output.numpy(), output.numpy()) <= 1e-5
