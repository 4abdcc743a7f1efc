"""Optimizer parameter groups: Darknet decays conv weights only."""

from __future__ import annotations

import pytest
import torch

from yolov3.models import create_model
from yolov3.train.optimizer import OptimizerConfig, build_optimizer, parameter_groups


def test_groups_split_weights_from_biases_and_norms() -> None:
    model = create_model("yolov3_tiny_test", num_classes=2)
    decayed, not_decayed = parameter_groups(model, 0.0005)
    conv_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
    assert {id(p) for p in decayed["params"]} == conv_weights
    bn_and_bias = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    bn_and_bias |= {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None}
    assert {id(p) for p in not_decayed["params"]} == bn_and_bias
    assert len(decayed["params"]) + len(not_decayed["params"]) == len(list(model.parameters()))
    assert (decayed["weight_decay"], not_decayed["weight_decay"]) == (0.0005, 0.0)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_no_decay_group_is_not_decayed(name: str) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.BatchNorm2d(1))
    optimizer = build_optimizer(model, OptimizerConfig(name=name, learning_rate=0.1, weight_decay=0.5))
    before = model[1].weight.detach().clone()
    conv_before = model[0].weight.detach().clone()
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # zero gradients: only weight decay could move a parameter
    assert torch.equal(model[1].weight, before)
    assert not torch.equal(model[0].weight, conv_before)  # the conv weight is decayed
    assert type(optimizer).__name__.lower() == name


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="learning_rate > 0"):
        OptimizerConfig(learning_rate=0)
