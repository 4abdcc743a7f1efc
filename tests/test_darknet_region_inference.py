"""Darknet models whose heads are [region] (YOLOv2) or [Gaussian_yolo] detect, evaluate and export through
:mod:`yolov3.inference.region_decode`, and Darknet ``.weights`` carry Darknet's ``letterbox_image`` as their
preprocessing wherever they are loaded. The [region] detections are checked against pjreddie's Darknet itself
(``tests/darknet_detect.c``: ``darknet detector test``'s letterbox, forward, ``get_region_detections`` and NMS)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from test_darknet_layers import write_random_weights
from test_detect_darknet import HARNESS_SOURCE, darknet_detections, match, our_detections

from yolov3 import evaluate
from yolov3.cli.export import main as export_main
from yolov3.darknet.cfg import parse_cfg_text
from yolov3.darknet.graph import HEAD_SECTIONS
from yolov3.data.dataset_config import build_dataset
from yolov3.data.image_io import read_image_rgb
from yolov3.detect import main as detect_main
from yolov3.evaluation.dataset_run import DatasetEvaluationSettings, evaluate_on_dataset, read_data_source
from yolov3.inference.model_loading import load_inference_model
from yolov3.inference.postprocess import darknet_postprocess
from yolov3.inference.predictor import Predictor, model_head_specs
from yolov3.inference.preprocess import Preprocessing, preprocess
from yolov3.inference.region_decode import DarknetHeadSpec, decode_head_sections
from yolov3.inference.stb_decoder import StbDecoder
from yolov3.models import Darknet
from yolov3.models.yolo_head import YoloHeadSpec


def _conv(filters: int, size: int = 3, bn: int = 1, activation: str = "leaky") -> str:
    return (
        f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride=1\npad=1\n"
        f"activation={activation}\n"
    )


POOL = "[maxpool]\nsize=2\nstride=2\n"

# yolov2-tiny-voc's layer structure (six pools, the last of stride 1) with 1/32 of its filters and 3 classes.
YOLOV2_TINY = (
    "[net]\nwidth=160\nheight=160\nchannels=3\n"
    + "".join(_conv(filters) + POOL for filters in (4, 8, 16, 16, 32))
    + _conv(32)
    + "[maxpool]\nsize=2\nstride=1\n"
    + _conv(32)
    + _conv(40, 1, 0, "linear")
    + "[region]\nanchors=1.08,1.19,3.42,4.41,6.63,11.38,9.42,5.11,16.62,10.52\nbias_match=1\nclasses=3\ncoords=4\n"
    "num=5\nsoftmax=1\njitter=.2\nrescore=1\nobject_scale=5\nnoobject_scale=1\nclass_scale=1\ncoord_scale=1\n"
    "absolute=1\nthresh=.6\nrandom=1\n"
)


def _gaussian(mask: str) -> str:
    return (
        f"[Gaussian_yolo]\nmask={mask}\nanchors=7,10,14,24,27,43,32,97,57,64,92,109\nclasses=3\nnum=6\njitter=.3\n"
        "ignore_thresh=.5\ntruth_thresh=1\nscale_x_y=1.05\niou_normalizer=0.5\nuc_normalizer=1.0\nrandom=1\n"
    )


# Gaussian_yolov3_BDD's head structure at two scales: 3 anchors * (8 box + 1 + 3 classes) = 36 filters.
GAUSSIAN = (
    "[net]\nwidth=128\nheight=128\nchannels=3\n"
    + "".join(_conv(filters) + POOL for filters in (4, 8, 16, 16, 32))
    + _conv(32)
    + _conv(36, 1, 0, "linear")
    + _gaussian("3,4,5")
    + "[route]\nlayers=-3\n"
    + _conv(16, 1)
    + "[upsample]\nstride=2\n[route]\nlayers=-1,8\n"
    + _conv(16)
    + _conv(36, 1, 0, "linear")
    + _gaussian("0,1,2")
)


@pytest.fixture(scope="module")
def detect_harness(pjreddie_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tests/darknet_detect.c`` linked with pjreddie's libdarknet.so (``darknet detector test`` in full precision)."""
    darknet_dir = pjreddie_darknet.parent
    binary = tmp_path_factory.mktemp("harness") / "darknet_detect"
    command = ["gcc", "-O2", "-std=c99", str(HARNESS_SOURCE), f"-I{darknet_dir / 'include'}", f"-L{darknet_dir}"]
    command += ["-ldarknet", f"-Wl,-rpath,{darknet_dir}", "-lm", "-lpthread", "-o", str(binary)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return binary


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (cfg, weights) with random weights."""
    directory = tmp_path_factory.mktemp("region_models")
    paths = {}
    for seed, (name, text) in enumerate({"yolov2_tiny": YOLOV2_TINY, "gaussian": GAUSSIAN}.items()):
        cfg_path, weights_path = directory / f"{name}.cfg", directory / f"{name}.weights"
        cfg_path.write_text(text)
        write_random_weights(parse_cfg_text(text, source=str(cfg_path)), weights_path, seed)
        paths[name] = (cfg_path, weights_path)
    return paths


def test_darknet_weights_load_with_their_head_kinds_and_darknets_preprocessing(models: dict) -> None:
    region = load_inference_model(models["yolov2_tiny"][1], cfg=models["yolov2_tiny"][0])
    assert [(type(spec), spec.kind, spec.stride, spec.num_anchors) for spec in region.head_specs] == [
        (DarknetHeadSpec, "region", 32, 5)
    ]
    gaussian = load_inference_model(models["gaussian"][1], cfg=models["gaussian"][0])
    assert [(spec.kind, spec.stride, spec.out_channels) for spec in gaussian.head_specs] == [
        ("Gaussian_yolo", 32, 36),
        ("Gaussian_yolo", 16, 36),
    ]
    for loaded in (region, gaussian):
        assert loaded.preprocessing == Preprocessing.from_mode("darknet") and loaded.num_classes == 3
    predictor = Predictor.from_darknet(models["yolov2_tiny"][0], models["yolov2_tiny"][1])
    assert predictor.preprocessing == Preprocessing.from_mode("darknet")
    with pytest.raises(ValueError, match=r"layer 14: only \[yolo\] heads"):
        region.model.head_specs  # noqa: B018 - the trainer's specs stay [yolo]-only


@pytest.mark.parametrize("name", ["yolov2_tiny", "gaussian"])
def test_detect_decodes_through_the_region_decoder(name: str, models: dict, shared_darknet: Path, tmp_path) -> None:
    """``detect``'s labels are the region decoder's rows straight from the model, thresholded and NMS'd as
    Darknet does, after Darknet's letterbox."""
    cfg, weights = models[name]
    image_path = shared_darknet / "images" / "dog.jpg"
    out = tmp_path / "out"
    arguments = ["--cfg", str(cfg), "--weights", str(weights), "--source", str(image_path), "--out", str(out)]
    assert detect_main([*arguments, "--conf", "0.05", "--save-conf", "--device", "cpu"]) == 0
    image = read_image_rgb(image_path)
    model = Darknet(cfg).eval()
    model.load_darknet_weights(weights)
    size = (model.cfg.net.height, model.cfg.net.width)
    tensor, placement = preprocess(image, size, Preprocessing.from_mode("darknet"))
    heads = [section for section in model.cfg.layers if isinstance(section, HEAD_SECTIONS)]
    with torch.no_grad():
        rows = decode_head_sections(heads, model(tensor[None]), size)
    (expected,) = darknet_postprocess(rows, 0.05, 0.45)
    boxes = placement.boxes_to_original(expected["boxes"])
    ours = our_detections(out / "labels", "dog", image.shape[:2])
    assert len(ours) == len(expected["scores"]) > 0
    for (label, score, box), reference_box, reference_score, reference_label in zip(
        ours, boxes.tolist(), expected["scores"].tolist(), expected["labels"].tolist(), strict=True
    ):
        assert label == reference_label and score == pytest.approx(reference_score, abs=2e-6)
        np.testing.assert_allclose(box, reference_box, atol=1e-3)


def test_region_detections_equal_pjreddies_darknet_detector_test(
    models: dict,
    shared_darknet: Path,
    pjreddie_darknet: Path,
    detect_harness: Path,
    tmp_path: Path,
) -> None:
    cfg, weights = models["yolov2_tiny"]
    library = pjreddie_darknet.parent / "libdarknet.so"
    images = [shared_darknet / "images" / f"{name}.jpg" for name in ("dog", "horses", "person")]
    arguments = ["--cfg", str(cfg), "--weights", str(weights), "--save-conf", "--conf", "0.2", "--device", "cpu"]
    arguments += ["--source", *map(str, images), "--out", str(tmp_path / "out"), "--stb-library", str(library)]
    assert detect_main(arguments) == 0
    total = 0
    for image in images:
        # the harness prints every class over its threshold, as ``detect --output darknet`` reports them
        reference = darknet_detections(detect_harness, pjreddie_darknet.parent, cfg, weights, image, thresh=0.2)
        size = StbDecoder(library)(image).shape[:2]
        worst_iou, worst_gap = match(our_detections(tmp_path / "out" / "labels", image.stem, size), reference)
        assert worst_iou >= 0.999 and worst_gap <= 0.001, (image.name, worst_iou, worst_gap)
        total += len(reference)
    assert total > 10


def test_evaluate_uses_darknets_letterbox_and_the_region_decoder(models: dict, tmp_path: Path) -> None:
    """``evaluate --weights W --cfg C --data D`` on a [region] model: its detections are the Predictor's
    (Darknet's letterbox, the region decoder, the same thresholds) on the same images."""
    cfg, weights = models["yolov2_tiny"]
    data = tmp_path / "shapes.yaml"
    synthetic = {"num_train": 1, "num_val": 3, "image_size": [120, 90], "max_objects": 2, "seed": 5}
    data.write_text(yaml.safe_dump({"format": "synthetic", "root": str(tmp_path / "shapes"), "synthetic": synthetic}))
    report = tmp_path / "report.json"
    arguments = ["--weights", str(weights), "--cfg", str(cfg), "--data", str(data), "--json-out", str(report)]
    assert evaluate.main([*arguments, "--batch-size", "1"]) == 0
    assert "mAP50" in json.loads(report.read_text())

    loaded = load_inference_model(weights, cfg=cfg)
    settings = DatasetEvaluationSettings(batch_size=1, conf_threshold=0.05, iou_threshold=0.5, max_detections=50)
    evaluation = evaluate_on_dataset(loaded, read_data_source(data), settings)
    predictor = Predictor(
        loaded.model, loaded.head_specs, loaded.input_size, loaded.preprocessing, conf_threshold=0.05,
        iou_threshold=0.5, max_detections=50, multi_label=True, batch_size=1,
    )  # fmt: skip
    dataset = build_dataset(read_data_source(data).dataset, "val", for_evaluation=True, progress=False)
    expected = []
    for index in range(len(dataset)):
        sample = dataset[index]
        (result,) = predictor.predict([sample.image])
        pairs = zip(result["boxes"].tolist(), result["scores"].tolist(), strict=True)
        expected += [(sample.image_id, score, box) for box, score in pairs]
    found = [(d["image_id"], d["score"], d["bbox"]) for d in evaluation.result.detections]
    assert len(found) == len(expected) > 0
    for (image_id, score, bbox), (expected_id, expected_score, box) in zip(found, expected, strict=True):
        assert image_id == expected_id and score == pytest.approx(expected_score, abs=1e-5)
        np.testing.assert_allclose(bbox, [box[0], box[1], box[2] - box[0], box[3] - box[1]], atol=1e-3)


def test_export_with_nms_describes_the_heads_and_keeps_darknets_preprocessing(models: dict, tmp_path: Path) -> None:
    import onnxruntime

    cfg, weights = models["gaussian"]
    out = tmp_path / "gaussian.onnx"
    arguments = ["--weights", str(weights), "--cfg", str(cfg), "--format", "onnx", "--out", str(out)]
    assert export_main([*arguments, "--with-nms", "--conf", "0.05"]) == 0
    metadata = {prop.key: json.loads(prop.value) for prop in onnx.load(str(out)).metadata_props}
    assert [head["kind"] for head in metadata["head_specs"]] == ["Gaussian_yolo", "Gaussian_yolo"]
    assert metadata["preprocessing"] == {"letterbox": True, "fill": 0.5, "resampling": "darknet"}
    loaded = load_inference_model(weights, cfg=cfg)
    images = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    boxes, scores, _, counts = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    predictor = Predictor(loaded.model, loaded.head_specs, (128, 128), conf_threshold=0.05)
    (expected,) = predictor.predict_batch(images)
    assert counts[0] == len(expected["scores"]) > 0
    np.testing.assert_allclose(scores[0, : counts[0]], expected["scores"].numpy(), atol=1e-4)
    np.testing.assert_allclose(boxes[0, : counts[0]], expected["boxes"].numpy(), atol=1e-2)


def test_plain_yolo_heads_still_get_yolo_head_specs() -> None:
    text = (
        "[net]\nwidth=64\nheight=64\nchannels=3\n"
        + _conv(8)
        + POOL
        + _conv(21, 1, 0, "linear")
        + "[yolo]\nmask=0,1,2\nanchors=10,14,23,27,37,58\nclasses=2\nnum=3\n"
    )
    model = Darknet(parse_cfg_text(text))
    assert model_head_specs(model) == model.head_specs and isinstance(model.head_specs[0], YoloHeadSpec)
