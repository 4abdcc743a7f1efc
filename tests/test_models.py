"""Native models: forward contract, gradients, registry, Darknet export round trip and structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolov3.darknet.cfg import parse_cfg, parse_cfg_text
from yolov3.darknet.graph import build_graph
from yolov3.export.darknet_cfg import PROJECT_CFGS, cfg_text
from yolov3.models import Darknet, YOLOv3Config, create_model, list_models

PROJECT_DARKNET = Path(__file__).resolve().parents[1] / "darknet"
TEST_VARIANTS = ("yolov3_test", "yolov3_tiny_test", "darknet53_test")
# Keys that only matter for training: an exported cfg may differ from Darknet's there (e.g. VOC's ignore_thresh).
TRAINING_KEYS = {"line", "source", "jitter", "ignore_thresh", "truth_thresh", "random", "layers", "from_layer"}


def test_registry_lists_every_builder_and_rejects_unknown_names() -> None:
    assert set(list_models()) >= {"darknet53", "yolov3", "yolov3_spp", "yolov3_tiny", *TEST_VARIANTS}
    with pytest.raises(KeyError, match="did you mean 'yolov3_tiny'"):
        create_model("yolov3-tiny")


@pytest.mark.parametrize("name", [*TEST_VARIANTS, "yolov3_mobilenet_v3_small"])
def test_every_parameter_gets_a_finite_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).train()
    outputs = model(torch.rand(2, 3, 64, 96))
    sum(output.square().mean() for output in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["yolov3_test", "yolov3_tiny_test", "yolov3_mobilenet_v3_small"])
def test_forward_returns_the_same_in_train_and_eval(name: str) -> None:
    model = create_model(name, num_classes=4)
    image = torch.rand(1, 3, 96, 64)
    train_outputs = model.train()(image)
    eval_outputs = model.eval()(image)
    assert isinstance(train_outputs, list) and isinstance(eval_outputs, list)
    assert [o.shape for o in train_outputs] == [o.shape for o in eval_outputs]
    for spec, output in zip(model.head_specs, eval_outputs, strict=True):
        assert output.shape == (1, spec.out_channels, 96 // spec.stride, 64 // spec.stride)
        assert spec.num_classes == 4 and spec.out_channels == spec.num_anchors * 9


def test_classifier_returns_logits_list() -> None:
    (logits,) = create_model("darknet53_test", num_classes=7).eval()(torch.rand(3, 3, 64, 64))
    assert logits.shape == (3, 7)


@pytest.mark.parametrize("name", TEST_VARIANTS)
def test_export_round_trip_native_to_darknet(name: str, tmp_path: Path) -> None:
    """Native -> cfg text + .weights -> Darknet(cfg) gives the same network and the same outputs."""
    torch.manual_seed(1)
    native = create_model(name)
    for module in native.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    cfg_path, weights_path = tmp_path / "model.cfg", tmp_path / "model.weights"
    native.save_darknet_cfg(cfg_path)
    native.save_darknet_weights(weights_path)
    built = Darknet(cfg_path)
    built.load_darknet_weights(weights_path)
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in native.parameters())
    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        for ours, theirs in zip(native.eval()(image), built.eval()(image), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    resaved = tmp_path / "resaved.weights"
    built.save_darknet_weights(resaved)
    assert resaved.read_bytes() == weights_path.read_bytes()


def _structure(cfg) -> list[tuple]:
    """Forward-relevant description of every layer: section kind, its shape keys, inputs and output shape."""
    return [
        (
            type(node.section).__name__,
            tuple(sorted((k, v) for k, v in vars(node.section).items() if k not in TRAINING_KEYS)),
            node.sources,
            node.output_shape,
        )
        for node in build_graph(cfg, 416, 416)
    ]


@pytest.mark.parametrize(
    ("official", "builder", "kwargs"),
    [
        ("yolov3.cfg", "yolov3", {}),
        ("yolov3-voc.cfg", "yolov3", {"num_classes": 20}),
        ("yolov3-spp.cfg", "yolov3_spp", {}),
        ("yolov3-tiny.cfg", "yolov3_tiny", {}),
        ("darknet53.cfg", "darknet53", {}),
    ],
)
def test_native_export_has_the_structure_of_darknets_cfg(shared_darknet: Path, official, builder, kwargs) -> None:
    exported = parse_cfg_text(create_model(builder, **kwargs).to_darknet_cfg_text())
    assert _structure(exported) == _structure(parse_cfg(shared_darknet / official))


def test_project_darknet_folder_is_what_the_models_export() -> None:
    files = sorted(path.name for path in PROJECT_DARKNET.glob("*.cfg"))
    assert files == sorted(PROJECT_CFGS)
    for file_name, (model_name, kwargs) in PROJECT_CFGS.items():
        assert (PROJECT_DARKNET / file_name).read_text() == cfg_text(model_name, **kwargs), (
            f"darknet/{file_name} is stale: run python -m yolov3.darknet.write_cfg --all darknet"
        )


def test_mobilenet_backbone_cannot_export_to_darknet() -> None:
    model = create_model("yolov3_mobilenet_v3_small", num_classes=2)
    with pytest.raises(NotImplementedError, match="only darknet53 exports to Darknet"):
        model.to_darknet_cfg_text()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"backbone": "resnet50"}, "backbone 'resnet50' is not one of darknet53, mobilenet_v3_large"),
        ({"num_classes": 0}, "num_classes must be at least 1"),
        ({"anchor_masks": ((0, 1), (2,))}, "anchor_masks has 2 groups; this model has 3 heads"),
        ({"anchor_masks": ((0, 1), (2,), (9,))}, "anchor mask (9,) must be non-empty indices into the 9 anchors"),
    ],
)
def test_config_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        YOLOv3Config(**kwargs)
    assert fragment in str(caught.value)


def test_yolov3_has_darknets_parameter_count() -> None:
    assert sum(p.numel() for p in create_model("yolov3").parameters()) == 61_949_149
