"""The classic sections ([lrn] / [normalization], [crop], [local], [detection]) against AlexeyAB's Darknet
itself: small cfgs with random weights, every layer within 1e-4 relative, the ``.weights`` file byte for byte
what Darknet's own writer saves after loading it, and [detection] boxes as ``get_detection_detections``.
[deconvolutional], which only pjreddie's parser reads, against pjreddie's Darknet the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from darknet_harness import NET, DarknetJob, compile_harness, run_darknet, run_random_networks
from darknet_testing import relative_error, write_random_weights
from test_darknet_layers import our_layer_outputs

from yolov3.darknet.cfg import CfgError, CropSection, DetectionSection, LocalSection, LrnSection, parse_cfg_text
from yolov3.darknet.graph import HEAD_SECTIONS
from yolov3.export.nms_graph import DetectionPostprocess, NmsOptions
from yolov3.inference.decode import decode_outputs
from yolov3.inference.predictor import Predictor, model_head_specs
from yolov3.inference.region_decode import (
    DarknetHeadSpec,
    decode_head_sections,
    decode_special_head,
    inference_head_specs,
)
from yolov3.models.crop import CenterCrop
from yolov3.models.darknet import Darknet
from yolov3.models.darknet_layers import darknet_head_activation
from yolov3.models.deconvolution import Deconvolution
from yolov3.models.local import LocallyConnected

CONV = "[convolutional]\nbatch_normalize=1\nfilters={filters}\nsize=3\nstride={stride}\npad=1\nactivation=leaky\n"
# side=2, num=2, classes=3: 2*2*(5*2+3) = 52 values
DETECTION_INPUTS = 52

CFGS: dict[str, tuple[int, str]] = {
    # kappa and alpha keep every norm positive (Darknet's dropped channel can make one negative: NaN there too)
    "lrn": (
        12,
        CONV.format(filters=8, stride=1)
        + "[lrn]\nsize=5\nalpha=0.1\nbeta=0.75\nkappa=2\n"
        + "[normalization]\nsize=4\nalpha=0.05\nbeta=0.5\nkappa=1.5\n"
        + "[lrn]\nsize=16\nalpha=0.02\nbeta=1.0\nkappa=1\n"
        + "[lrn]\nsize=1\nalpha=0.1\nkappa=3\n",
    ),
    "crop": (
        16,
        CONV.format(filters=6, stride=1)
        + "[crop]\ncrop_height=11\ncrop_width=8\nflip=1\nangle=7\nsaturation=1.5\nexposure=1.5\nshift=0.2\n"
        + CONV.format(filters=4, stride=1)
        + "[crop]\ncrop_height=6\ncrop_width=7\nnoadjust=1\n",
    ),
    "local": (
        12,
        CONV.format(filters=6, stride=1)
        + "[local]\nfilters=5\nsize=3\nstride=1\nactivation=leaky\n"
        + "[local]\nfilters=4\nsize=3\nstride=2\npad=1\n"
        + "[local]\nfilters=3\nsize=2\nstride=2\nactivation=linear\n"
        + "[local]\nfilters=2\nsize=1\nactivation=tanh\n",
    ),
    "detection_softmax_sqrt": (
        16,
        CONV.format(filters=8, stride=2)
        + "[local]\nfilters=4\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
        + "[dropout]\nprobability=0.5\n"
        + f"[connected]\noutput={DETECTION_INPUTS}\nactivation=linear\n"
        + "[detection]\nclasses=3\ncoords=4\nrescore=1\nside=2\nnum=2\nsoftmax=1\nsqrt=1\njitter=.2\n"
        + "object_scale=1\nnoobject_scale=.5\nclass_scale=1\ncoord_scale=5\n",
    ),
    "detection_plain": (
        16,
        CONV.format(filters=4, stride=2)
        + f"[connected]\noutput={DETECTION_INPUTS}\nactivation=logistic\n"
        + "[detection]\nclasses=3\ncoords=4\nside=2\nnum=2\n",
    ),
}
BOXES = ("detection_softmax_sqrt", "detection_plain")


@pytest.fixture(scope="module")
def darknet_runs(alexeyab_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every cfg through one Darknet harness process: name -> (cfg, weights path, input, result, boxes result)."""
    work = tmp_path_factory.mktemp("darknet_classic_layers")
    runs, boxes = run_random_networks(alexeyab_darknet, work, CFGS, 200, boxes=BOXES)
    return {name: (*run, boxes.get(name)) for name, run in runs.items()}


def loaded_model(cfg, weights_path: Path) -> Darknet:
    model = Darknet(cfg).eval()
    model.load_darknet_weights(weights_path)  # must fit exactly: a float short or left over is an error
    return model


def layer_errors(model: Darknet, image: np.ndarray, result) -> dict[int, float]:
    """Layer index -> relative error of our output (Darknet's in-place head activation applied) vs Darknet's."""
    ours = our_layer_outputs(model, torch.from_numpy(image)[None])
    assert sorted(result.outputs) == list(range(len(model.cfg.layers)))
    errors = {}
    for index, section in enumerate(model.cfg.layers):
        mine = ours[index]
        if isinstance(section, HEAD_SECTIONS):
            mine = darknet_head_activation(section, torch.from_numpy(mine)[None])[0].numpy()
        reference = result.outputs[index].ravel()
        assert mine.size == reference.size, f"layer {index} [{section.KIND}]: {mine.shape} vs {reference.size}"
        errors[index] = relative_error(mine.ravel(), reference)
    return errors


@pytest.mark.parametrize("name", list(CFGS))
def test_every_layer_matches_darknet(darknet_runs: dict, name: str) -> None:
    cfg, weights_path, image, result, _ = darknet_runs[name]
    for index, error in layer_errors(loaded_model(cfg, weights_path), image, result).items():
        assert error < 1e-4, f"layer {index} [{cfg.layers[index].KIND}]: relative error {error:.2e}"


@pytest.mark.parametrize("name", list(CFGS))
def test_weights_layout_is_what_darknet_reads(darknet_runs: dict, name: str, tmp_path: Path) -> None:
    """Darknet loads our file and saves it back with the same floats and length; our writer does too."""
    cfg, weights_path, _, result, _ = darknet_runs[name]
    ours = weights_path.read_bytes()
    assert len(result.saved_weights) == len(ours)
    assert result.saved_weights[20:] == ours[20:]
    loaded_model(cfg, weights_path).save_darknet_weights(tmp_path / "saved.weights")
    assert (tmp_path / "saved.weights").read_bytes()[20:] == ours[20:]


def darknet_probabilities(decoded: np.ndarray) -> np.ndarray:
    """Darknet's detection probabilities from our decoded rows: objectness * class score, 0 at or below 0.01."""
    probabilities = decoded[:, 4:5] * decoded[:, 5:]
    return np.where(probabilities > 0.01, probabilities, 0.0)


def decoded_boxes(section: DetectionSection, head: torch.Tensor, cfg) -> np.ndarray:
    """(S*S*num, 5+C) rows of one image, through the decode path the predictor uses."""
    return decode_special_head(section, head, (cfg.net.height, cfg.net.width))[0].numpy()


@pytest.mark.parametrize("name", BOXES)
def test_detection_boxes_match_get_detection_detections(darknet_runs: dict, name: str) -> None:
    """Our decode of the [detection] head, row for row, against Darknet's boxes (in [net] pixels, as
    get_network_boxes gives them for this layer) and probabilities; leaving out sqrt or softmax is seen."""
    cfg, weights_path, image, _, boxes = darknet_runs[name]
    model = loaded_model(cfg, weights_path)
    (spec,) = inference_head_specs(model)
    assert isinstance(spec, DarknetHeadSpec) and spec.kind == "detection"
    assert spec.out_channels == DETECTION_INPUTS and spec.stride == cfg.net.height
    with torch.no_grad():
        (head,) = model(torch.from_numpy(image)[None])
    decoded = spec.decode(head, (cfg.net.height, cfg.net.width))[0].numpy()
    reference = np.array(boxes.detections)  # x, y, w, h, objectness, probabilities
    assert decoded.shape == reference.shape
    assert relative_error(decoded[:, :5], reference[:, :5]) < 1e-4
    assert relative_error(darknet_probabilities(decoded), reference[:, 5:]) < 1e-4
    section = cfg.layers[-1]
    if section.sqrt:
        wrong = decoded_boxes(dataclasses.replace(section, sqrt=0), head, cfg)
        assert relative_error(wrong[:, 2:4], reference[:, 2:4]) > 1e-2
    if section.softmax:
        wrong = decoded_boxes(dataclasses.replace(section, softmax=0), head, cfg)
        assert relative_error(darknet_probabilities(wrong), reference[:, 5:]) > 1e-2


def test_comparison_sees_textbook_lrn(darknet_runs: dict) -> None:
    """torch's LocalResponseNorm (alpha over size, every window channel counted) is not Darknet's: the
    comparison above tells them apart."""
    cfg, weights_path, image, result, _ = darknet_runs["lrn"]
    ours = our_layer_outputs(loaded_model(cfg, weights_path), torch.from_numpy(image)[None])
    section = cfg.layers[1]
    assert isinstance(section, LrnSection)
    textbook = F.local_response_norm(
        torch.from_numpy(ours[0])[None], section.size, section.alpha * section.size, section.beta, section.kappa
    )
    assert relative_error(textbook[0].numpy().ravel(), result.outputs[1].ravel()) > 1e-3


def test_comparison_sees_a_wrong_local_layout_or_crop_offset(darknet_runs: dict) -> None:
    """Local weights read filter-major instead of location-major, or a crop window one pixel off, differ."""
    cfg, weights_path, image, result, _ = darknet_runs["local"]
    model = loaded_model(cfg, weights_path)
    local = model.layers[1]
    assert isinstance(cfg.layers[1], LocalSection) and isinstance(local, LocallyConnected)
    with torch.no_grad():
        weight = local.weight.clone()
        # (L, F, K) read as if it were (F, L, K): the same floats, filter-major
        local.weight.copy_(weight.reshape(weight.shape[1], weight.shape[0], -1).transpose(0, 1))
    mine = our_layer_outputs(model, torch.from_numpy(image)[None])[1]
    assert relative_error(mine.ravel(), result.outputs[1].ravel()) > 1e-2

    cfg, weights_path, image, result, _ = darknet_runs["crop"]
    model = loaded_model(cfg, weights_path)
    crop = model.layers[1]
    assert isinstance(cfg.layers[1], CropSection) and isinstance(crop, CenterCrop)
    crop.top += 1
    mine = our_layer_outputs(model, torch.from_numpy(image)[None])[1]
    assert relative_error(mine.ravel(), result.outputs[1].ravel()) > 1e-2


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ("[local]\nfilters=2\nsize=5\npad=1\n", r"pad=1 with size=5 and stride=1 on a 8x8 input is refused"),
        ("[local]\nfilters=2\nsize=3\npad=2\n", r"pad=2 is not 0 or 1"),
        ("[local]\nfilters=2\nactivation=mish\n", r"activation=mish is refused"),
        ("[lrn]\nsize=8\n", r"size=8 on 3 channels is refused"),
        ("[crop]\ncrop_height=9\ncrop_width=4\n", r"crop_height=9, crop_width=4 is larger than the 8x8 input"),
        ("[connected]\noutput=52\n[detection]\nclasses=3\nside=2\nnum=2\n", r"coords=1 is refused"),
        ("[connected]\noutput=50\n[detection]\nclasses=3\ncoords=4\nside=2\nnum=2\n", r"need side\*side\*.*=52 inputs"),
    ],
)
def test_what_darknet_would_misread_is_refused(layers: str, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        Darknet(parse_cfg_text(NET.format(size=8) + layers))


# [deconvolutional] is read by pjreddie's Darknet only (AlexeyAB's parser.c prints "Type not recognized"). Its
# convolution has no batch norm: pjreddie's normalizes as (x - mean) / (sqrt(var) + 1e-6), AlexeyAB's (built
# here for [convolutional]) as (x - mean) / sqrt(var + 1e-5).
DECONVOLUTION_CFG = (
    "[net]\nwidth=6\nheight=6\nchannels=3\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
    "[deconvolutional]\nbatch_normalize=1\nfilters=5\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
    "[deconv]\nfilters=3\nsize=2\nstride=2\nactivation=linear\n"
    "[deconvolutional]\nbatch_normalize=1\nfilters=2\nsize=4\npadding=1\n"
)


@pytest.fixture(scope="module")
def pjreddie_run(pjreddie_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The deconvolution cfg through pjreddie's Darknet: (cfg, weights path, input, result)."""
    work = tmp_path_factory.mktemp("darknet_deconvolution")
    executable = compile_harness(pjreddie_darknet, work, Path(__file__).with_name("darknet_pjreddie_forward.c"))
    cfg_path, weights_path = work / "deconvolution.cfg", work / "deconvolution.weights"
    cfg_path.write_text(DECONVOLUTION_CFG)
    cfg = parse_cfg_text(DECONVOLUTION_CFG, source=str(cfg_path))
    write_random_weights(cfg, weights_path, seed=7)
    image = np.random.default_rng(7).random((3, 6, 6), dtype=np.float32)
    (result,) = run_darknet(executable, [DarknetJob(cfg_path, weights_path, image, all_layers=True)], work / "out")
    return cfg, weights_path, image, result


def test_deconvolution_matches_pjreddies_darknet(pjreddie_run: tuple, tmp_path: Path) -> None:
    cfg, weights_path, image, result = pjreddie_run
    assert [node.output_shape for node in Darknet(cfg).nodes] == [(4, 6, 6), (5, 11, 11), (3, 22, 22), (2, 23, 23)]
    for index, error in layer_errors(loaded_model(cfg, weights_path), image, result).items():
        assert error < 1e-4, f"layer {index} [{cfg.layers[index].KIND}]: relative error {error:.2e}"
    ours = weights_path.read_bytes()
    assert len(result.saved_weights) == len(ours) and result.saved_weights[20:] == ours[20:]
    loaded_model(cfg, weights_path).save_darknet_weights(tmp_path / "saved.weights")
    assert (tmp_path / "saved.weights").read_bytes()[20:] == ours[20:]


def test_comparison_sees_a_transposed_deconvolution(pjreddie_run: tuple) -> None:
    """Weights read as (filters, C_in, size, size), torch's conv2d order, instead of Darknet's (C_in, filters)."""
    cfg, weights_path, image, result = pjreddie_run
    model = loaded_model(cfg, weights_path)
    deconvolution = model.layers[1]
    assert isinstance(deconvolution, Deconvolution)
    with torch.no_grad():
        weight = deconvolution.weight.clone()
        # (C_in, F, k, k) read as if it were (F, C_in, k, k): the same floats
        deconvolution.weight.copy_(weight.reshape(weight.shape[1], weight.shape[0], *weight.shape[2:]).transpose(0, 1))
    mine = our_layer_outputs(model, torch.from_numpy(image)[None])[1]
    assert relative_error(mine.ravel(), result.outputs[1].ravel()) > 1e-2


def test_a_yolov1_cfg_goes_through_the_predictor_and_the_nms_graph_but_does_not_train() -> None:
    """[detection] heads take the [region] route: a DarknetHeadSpec, decode_outputs, the Predictor's NMS and the
    export's NMS graph (its dummy head (1, N, 1, 1) at stride = the [net] size); the trainer refuses them."""
    size, layers = CFGS["detection_softmax_sqrt"]
    cfg = parse_cfg_text(NET.format(size=size) + layers, source="v1.cfg")
    model = Darknet(cfg).eval()
    specs = model_head_specs(model)
    batch = torch.rand(2, 3, size, size)
    with torch.no_grad():
        heads = model(batch)
    decoded = decode_outputs(heads, specs, (size, size))
    assert decoded.shape == (2, 2 * 2 * 2, 5 + 3)
    torch.testing.assert_close(decoded, decode_head_sections([cfg.layers[-1]], heads, (size, size)))
    predictor = Predictor(model, specs, input_size=(size, size), conf_threshold=0.0, iou_threshold=1.0)
    (detections, _) = predictor.predict_batch(batch)
    assert 0 < len(detections["boxes"]) <= 2 * 2 * 2
    dummy = torch.zeros(1, specs[0].out_channels, size // specs[0].stride, size // specs[0].stride)
    boxes, _, _, counts = DetectionPostprocess(specs, (size, size), NmsOptions(0.0, 1.0, 10))(dummy)
    assert boxes.shape == (1, 10, 4) and counts.shape == (1,)
    assert specs[0].describe() == {
        "kind": "detection", "stride": size, "num_classes": 3, "side": 2, "num": 2, "softmax": 1, "sqrt": 1
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"v1\.cfg:\d+: \[detection\] layer 4: only \[yolo\] heads"):
        model.head_specs  # noqa: B018 - the trainer and the [yolo] decoder start here
