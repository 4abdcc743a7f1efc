"""Transfer learning: pretrained detectors whose heads do not fit, priors, and cutoffs of longer files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from darknet_testing import write_random_weights

from yolov3.checkpoint import Checkpoint, ModelSpec, save_checkpoint
from yolov3.darknet.weights_file import WeightsFileError
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.models import Darknet, create_model
from yolov3.models.pretrained import PretrainedWeightsError, initialize_output_convs, output_conv_modules
from yolov3.train.config import ModelConfig
from yolov3.train.pretrained import load_pretrained, prepare_initial_weights


def _logit(probability: float) -> float:
    return math.log(probability / (1 - probability))


@pytest.mark.shared
def test_real_tiny_weights_into_a_three_class_model(tiny_weights: Path, shared_darknet: Path) -> None:
    """Exactly the two output convs are re-initialised; every other tensor equals the file's, as read by the
    cfg-built network of the official yolov3-tiny.cfg (an independent reading of the same file)."""
    model = create_model("yolov3_tiny", num_classes=3)
    report = load_pretrained(model, tiny_weights)
    assert report.names("re-initialised") == ["layer 15", "layer 22"]
    assert report.counts == {"loaded": 11, "re-initialised": 2, "missing": 0}
    assert "the file's head has 80 classes" in report.format_table()

    reference = Darknet(shared_darknet / "yolov3-tiny.cfg")
    reference.load_darknet_weights(tiny_weights)
    ours, theirs = model.darknet_conv_parameters(), reference.darknet_conv_parameters()
    output_convs = {id(conv) for conv, _ in output_conv_modules(model)}
    assert len(ours) == len(theirs) == 13
    for mine, file_layer in zip(ours, theirs, strict=True):
        if id(mine.conv) in output_convs:
            assert mine.conv.weight.shape[0] == 24 and file_layer.conv.weight.shape[0] == 255
            continue
        for tensor, expected in zip(mine.tensors(), file_layer.tensors(), strict=True):
            assert torch.equal(tensor, expected)
    for conv, spec in output_conv_modules(model):  # the fresh heads start at the priors
        bias = conv.bias.view(spec.num_anchors, 5 + spec.num_classes)
        assert torch.all(bias[:, :4] == 0)
        assert torch.allclose(bias[:, 4], torch.tensor(_logit(0.01)))
        assert torch.allclose(bias[:, 5:], torch.tensor(_logit(1 / 3)))
        assert conv.weight.abs().max() <= math.sqrt(2 / conv.weight[0].numel())


@pytest.mark.shared
def test_same_class_count_loads_every_layer(tiny_weights: Path) -> None:
    model = create_model("yolov3_tiny")
    report = load_pretrained(model, tiny_weights)
    assert report.counts == {"loaded": 13, "re-initialised": 0, "missing": 0}
    exact = create_model("yolov3_tiny")
    exact.load_darknet_weights(tiny_weights)
    for key, value in exact.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.shared
def test_backbone_cutoff_reads_the_first_layers_of_a_whole_detector(tiny_weights: Path) -> None:
    model = create_model("yolov3_tiny", num_classes=3)
    heads_before = [conv.weight.clone() for conv, _ in output_conv_modules(model)]
    model.load_darknet_weights(tiny_weights, cutoff=15)  # the 80-class file is longer: only layers 0..14 are read
    exact = create_model("yolov3_tiny")
    exact.load_darknet_weights(tiny_weights)
    for mine, file_layer in zip(model.darknet_conv_parameters(), exact.darknet_conv_parameters(), strict=True):
        if mine.layer_index < 15:
            assert all(torch.equal(a, b) for a, b in zip(mine.tensors(), file_layer.tensors(), strict=True))
    assert all(
        torch.equal(conv.weight, before)
        for (conv, _), before in zip(output_conv_modules(model), heads_before, strict=True)
    )


def test_a_file_shorter_than_the_cutoff_is_an_error(tmp_path: Path) -> None:
    model = create_model("yolov3_tiny_test")
    path = tmp_path / "full.weights"
    count = write_random_weights(model.to_darknet_cfg(), path)
    path.write_bytes(path.read_bytes()[:-400])  # 100 floats short
    expected = rf"expected {count:,} floats for layers 0..22 .* found {count - 100:,};"
    with pytest.raises(WeightsFileError, match=expected):
        model.load_darknet_weights(path, cutoff=23)
    with pytest.raises(WeightsFileError, match=r"found [0-9,]+; the file is truncated"):  # counts, never 1.2e+06
        model.load_darknet_weights(path)


@pytest.mark.shared
def test_weights_of_another_architecture_name_the_first_layer_that_differs(tiny_weights: Path) -> None:
    model = create_model("yolov3_tiny", num_classes=3, width_multiple=0.5)
    with pytest.raises(PretrainedWeightsError) as error:
        load_pretrained(model, tiny_weights)
    message = str(error.value)
    assert str(tiny_weights) in message and "8,858,734 floats" in message
    assert "the file fits yolov3_tiny" in message
    assert "layer 0 is conv 3->8 3x3 +bn in this model, conv 3->16 3x3 +bn in the file" in message


def test_random_darknet_file_of_other_classes_reinitialises_only_heads(tmp_path: Path) -> None:
    source = create_model("yolov3_test", num_classes=7)
    path = tmp_path / "seven.weights"
    write_random_weights(source.to_darknet_cfg(), path, seed=3)
    source.load_darknet_weights(path)
    model = create_model("yolov3_test", num_classes=2)
    report = load_pretrained(model, path)
    assert report.counts["re-initialised"] == 3 and report.counts["missing"] == 0
    assert "7 classes" in report.format_table()
    output_convs = {id(conv) for conv, _ in output_conv_modules(model)}
    for mine, theirs in zip(model.darknet_conv_parameters(), source.darknet_conv_parameters(), strict=True):
        if id(mine.conv) not in output_convs:
            assert all(torch.equal(a, b) for a, b in zip(mine.tensors(), theirs.tensors(), strict=True))


def _checkpoint(path: Path, name: str, num_classes: int, **kwargs: object) -> torch.nn.Module:
    model = create_model(name, num_classes=num_classes, **kwargs)
    spec = {"name": name, "kwargs": {"num_classes": num_classes, **kwargs}}
    save_checkpoint(path, Checkpoint(ModelSpec.from_dict(spec), model.state_dict()))
    return model


def test_checkpoint_of_other_classes_loads_all_but_the_output_convs(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "five.pt", "yolov3_tiny_test", 5)
    model = create_model("yolov3_tiny_test", num_classes=2)
    report = load_pretrained(model, tmp_path / "five.pt")
    assert report.names("re-initialised") == [
        "head_large.1.conv.weight",
        "head_large.1.conv.bias",
        "head_medium.1.conv.weight",
        "head_medium.1.conv.bias",
    ]
    state = source.state_dict()
    for key, value in model.state_dict().items():
        if key not in report.names("re-initialised"):
            assert torch.equal(value, state[key]), key


def test_checkpoint_of_another_model_says_which_model_it_holds(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "big.pt", "yolov3_test", 3)
    with pytest.raises(PretrainedWeightsError, match=r"big.pt: holds yolov3_test \{'num_classes': 3\}, which"):
        load_pretrained(create_model("yolov3_tiny_test", num_classes=3), tmp_path / "big.pt")
    _checkpoint(tmp_path / "wide.pt", "yolov3_tiny_test", 3, width_multiple=0.125)
    with pytest.raises(PretrainedWeightsError, match=r"first tensor that differs is 'stride16.0.conv.weight', 1x3x3x3"):
        load_pretrained(create_model("yolov3_tiny_test", num_classes=3), tmp_path / "wide.pt")


def test_priors_make_the_first_loss_small() -> None:
    """With objectness at logit(0.01) the objectness loss of an untrained model is far below the 0.5 start."""
    torch.manual_seed(0)
    images = torch.rand(4, 3, 128, 128)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3], [2, 0, 0.3, 0.6, 0.2, 0.1]])
    losses = []
    for with_priors in (False, True):
        torch.manual_seed(1)
        model = create_model("yolov3_tiny_test", num_classes=3)
        if with_priors:
            prepare_initial_weights(model, ModelConfig(name="yolov3_tiny_test"))
        loss = YoloLoss(model.head_specs)(model(images), targets, (128, 128))
        losses.append(float(loss.obj))
    assert losses[1] < losses[0] / 10


def test_priors_are_checked() -> None:
    model = create_model("yolov3_tiny_test")
    with pytest.raises(ValueError, match=r"objectness_prior must be in \(0, 1\), got 1.5"):
        initialize_output_convs(model, objectness_prior=1.5)
    with pytest.raises(ValueError, match="objectness_prior"):
        ModelConfig(objectness_prior=0.0)
