"""Exponential moving average of the weights, on ``torch.optim.swa_utils.AveragedModel``.

The decay ramps up as ``decay * (1 - exp(-updates / ramp_steps))`` so that early in training (and in
short runs) the average follows the model instead of lagging behind its random initialization.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ramped_ema(decay: float, ramp_steps: float):
    """A ``multi_avg_fn`` for ``AveragedModel``: a lerp toward the model with the ramped decay."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        effective = decay * (1.0 - math.exp(-float(num_averaged) / ramp_steps))
        floating = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floating:
            torch._foreach_lerp_([a for a, _ in floating], [c for _, c in floating], 1.0 - effective)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():
                a.copy_(c)  # integer buffers (BatchNorm's num_batches_tracked) follow the model

    return update


def build_ema(model: nn.Module, decay: float = 0.999, ramp_steps: float = 2000.0) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and buffers), updated with ``ema.update_parameters(model)``."""
    return AveragedModel(model, multi_avg_fn=ramped_ema(decay, ramp_steps), use_buffers=True)
