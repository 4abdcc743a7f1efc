"""``train.channels_last`` (yolov3.train.memory_format): NHWC convolutions, the narrow stem left in NCHW."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from yolov3.models import create_model
from yolov3.train.memory_format import MIN_CHANNELS, to_channels_last

CHANNELS_LAST = torch.channels_last


def quarter_tiny() -> nn.Module:
    """The main job's model: a quarter-width yolov3-tiny, 4 and 8 channels in its first two convolutions."""
    torch.manual_seed(0)
    return create_model("yolov3_tiny", num_classes=3, width_multiple=0.25)


def test_only_convolutions_of_at_least_min_channels_become_channels_last() -> None:
    model = quarter_tiny()
    narrow = to_channels_last(model)
    convolutions = {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
    expected_narrow = sorted(name for name, module in convolutions.items() if module.out_channels < MIN_CHANNELS)
    assert sorted(narrow) == expected_narrow and len(narrow) == 2  # the 4- and 8-channel stem
    for name, module in convolutions.items():
        nhwc = module.weight.is_contiguous(memory_format=CHANNELS_LAST)
        assert nhwc == (name not in narrow), name
        if name in narrow:
            assert module.weight.is_contiguous(), name


def test_the_stem_computes_in_nchw_and_the_rest_in_nhwc_with_the_same_outputs() -> None:
    reference = quarter_tiny().eval()
    model = quarter_tiny().eval()
    narrow = set(to_channels_last(model))
    layouts: dict[str, bool] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            layouts[name] = output.is_contiguous(memory_format=CHANNELS_LAST) and not output.is_contiguous()

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(record(name))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        outputs, expected = model(images), reference(images)
    stem = [name for name in layouts if name in narrow]
    assert stem and not any(layouts[name] for name in stem)  # NCHW outputs: batch norm runs its NCHW kernels
    assert all(layouts[name] for name in layouts if name not in narrow)
    for output, target in zip(outputs, expected, strict=True):
        torch.testing.assert_close(output, target, rtol=1e-4, atol=1e-4)


def test_pruned_convolutions_convert_weight_and_mask_together() -> None:
    model = quarter_tiny()
    convolution = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 64)
    prune.l1_unstructured(convolution, "weight", amount=0.5)
    to_channels_last(model)
    assert convolution.weight_orig.is_contiguous(memory_format=CHANNELS_LAST)
    assert convolution.weight_mask.is_contiguous(memory_format=CHANNELS_LAST)
    assert float((convolution.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_min_channels_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive channel count, got 0"):
        to_channels_last(quarter_tiny(), min_channels=0)
