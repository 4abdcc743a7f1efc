"""Tests for yolov3.models.fuse: folded conv+BatchNorm models compute what the unfused ones do in eval mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from yolov3.darknet.cfg import ConvolutionalSection, parse_cfg_text
from yolov3.models import Darknet, create_model
from yolov3.models.fuse import fuse_conv_bn
from yolov3.models.layers import ConvBNAct

RELATIVE_TOLERANCE = 1e-5
INPUT_SIZE = 64


def tiny_darknet() -> Darknet:
    """A cfg-built Darknet from yolov3_tiny_test's exported cfg text."""
    return Darknet(parse_cfg_text(create_model("yolov3_tiny_test").to_darknet_cfg_text()))


MODEL_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "yolov3_test": lambda: create_model("yolov3_test"),
    "yolov3_tiny_test": lambda: create_model("yolov3_tiny_test"),
    "darknet_from_tiny_cfg": tiny_darknet,
}


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters (and every conv bias)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(channels, generator=generator) * 1.5 + 0.25)
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(channels, generator=generator) * 0.2)
            elif isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.copy_(torch.randn(module.out_channels, generator=generator) * 0.1)


def batch_norm_count(model: nn.Module) -> int:
    return sum(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def eval_outputs(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        outputs = [output.clone() for output in model(images)]
    model.train(was_training)
    return outputs


def assert_outputs_close(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, rtol=RELATIVE_TOLERANCE, atol=RELATIVE_TOLERANCE * scale)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(MODEL_BUILDERS))
def test_fused_outputs_equal_unfused_eval_outputs(name: str, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = MODEL_BUILDERS[name]()
    randomize_batch_norms(model)
    expected = eval_outputs(model, images)

    fused = fuse_conv_bn(model)

    assert not fused.training
    assert batch_norm_count(fused) == 0
    blocks = [module for module in fused.modules() if isinstance(module, ConvBNAct)]
    assert blocks and all(block.bn is None and block.conv.bias is not None for block in blocks)
    with torch.inference_mode():
        actual = fused(images)
    assert_outputs_close(actual, expected)


@pytest.mark.parametrize("name", list(MODEL_BUILDERS))
def test_original_model_is_untouched(name: str, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = MODEL_BUILDERS[name]()
    randomize_batch_norms(model)
    model.train()
    bn_before = batch_norm_count(model)
    state_before = {key: value.clone() for key, value in model.state_dict().items()}
    expected = eval_outputs(model, images)

    fuse_conv_bn(model)

    assert model.training
    assert bn_before > 0 and batch_norm_count(model) == bn_before
    state_after = model.state_dict()
    assert state_after.keys() == state_before.keys()
    for key, value in state_before.items():
        assert torch.equal(state_after[key], value), key
    assert_outputs_close(eval_outputs(model, images), expected)


def test_fused_darknet_exports_consistent_cfg_and_weights(tmp_path: Path, images: torch.Tensor) -> None:
    """The fused Darknet's cfg says batch_normalize=0, so its cfg and .weights reload to the same network."""
    torch.manual_seed(0)
    model = tiny_darknet()
    randomize_batch_norms(model)
    fused = fuse_conv_bn(model)

    conv_sections = [section for section in fused.cfg.layers if isinstance(section, ConvolutionalSection)]
    assert all(section.batch_normalize == 0 for section in conv_sections)
    assert any(isinstance(section, ConvolutionalSection) and section.batch_normalize for section in model.cfg.layers), (
        "the original cfg keeps its batch_normalize=1"
    )

    weights = tmp_path / "fused.weights"
    fused.save_darknet_weights(weights)
    reloaded = Darknet(parse_cfg_text(fused.to_darknet_cfg_text()))
    reloaded.load_darknet_weights(weights)
    assert batch_norm_count(reloaded) == 0
    assert_outputs_close(eval_outputs(reloaded, images), eval_outputs(model, images))


def test_fused_native_model_exports_without_batch_norm() -> None:
    fused = fuse_conv_bn(create_model("yolov3_tiny_test"))
    sections = [section for section in fused.to_darknet_cfg().layers if isinstance(section, ConvolutionalSection)]
    assert sections and all(section.batch_normalize == 0 for section in sections)


def test_fusing_a_pruned_model_makes_the_masks_permanent() -> None:
    from yolov3.compression.masks import magnitude_prune

    torch.manual_seed(0)
    model = create_model("yolov3_tiny_test").eval()
    magnitude_prune(model, 0.5)
    fused = fuse_conv_bn(model)
    assert not any(name.endswith(("_orig", "_mask")) for name in fused.state_dict())
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for ours, reference in zip(fused(image), model(image), strict=True):
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
