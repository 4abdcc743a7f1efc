"""Optimizers with Darknet-style parameter groups: weight decay on conv/linear weights only.

Biases and normalization parameters (BatchNorm scale and shift) get no weight decay, as in Darknet,
which decays only convolution weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class OptimizerConfig:
    """``learning_rate`` is the base rate of the schedule; ``momentum`` is Adam's beta1 for Adam/AdamW."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    nesterov: bool = False
    beta2: float = 0.999

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(
                f"learning_rate > 0, weight_decay >= 0 and 0 <= momentum < 1 are required; got {self.learning_rate}, "
                f"{self.weight_decay}, {self.momentum}"
            )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights of convs/linears (decayed), and biases + norm parameters (not decayed)."""
    decayed: list[nn.Parameter] = []
    not_decayed: list[nn.Parameter] = []
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            # "weight_orig": the weight of a conv under torch.nn.utils.prune
            is_weight = name in ("weight", "weight_orig") and not isinstance(module, norm_types)
            (decayed if is_weight else not_decayed).append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay, "name": "weights"},
        {"params": not_decayed, "weight_decay": 0.0, "name": "biases_and_norms"},
    ]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum, nesterov=config.nesterov)
    optimizer_class = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=config.learning_rate, betas=(config.momentum, config.beta2))
