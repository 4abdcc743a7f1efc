"""Exponential moving average of the weights, on ``torch.optim.swa_utils.AveragedModel``.

The decay ramps up as ``decay * (1 - exp(-updates / ramp_steps))`` so that early in training (and in
short runs) the average follows the model instead of lagging behind its random initialization.

Pruned models (``torch.nn.utils.prune``: ``weight = weight_orig * weight_mask``): before each update the
average takes on the model's pruning reparametrization and *copies* its masks (averaging a mask that just
changed would leave fractions), so the average's masks stay binary and equal to the model's, its
``weight_orig`` is averaged, and its effective weights are exactly zero wherever the model's are.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune
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


@torch.no_grad()
def follow_pruning(average: nn.Module, model: nn.Module) -> None:
    """Give ``average`` (a copy of ``model``'s architecture) the pruning reparametrization and masks of ``model``.

    Tensors the model prunes and the average does not yet are pruned with ``prune.custom_from_mask`` (their
    values become the average's ``*_orig``); masks it already has are overwritten with the model's. Then
    the average's pruned tensors are recomputed (``orig * mask``), as its pre-hooks would before a forward.
    """
    modules = dict(average.named_modules())
    for name, module in model.named_modules():
        hooks = [hook for hook in module._forward_pre_hooks.values() if isinstance(hook, prune.BasePruningMethod)]
        if not hooks:
            continue
        target = modules[name]
        for hook in hooks:
            tensor = hook._tensor_name
            mask = getattr(module, f"{tensor}_mask")
            existing = getattr(target, f"{tensor}_mask", None)
            if existing is None:
                prune.custom_from_mask(target, tensor, mask.detach().clone())
            else:
                existing.copy_(mask)
        for hook in target._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                hook(target, ())  # weight = weight_orig * weight_mask, now


class ExponentialMovingAverage(AveragedModel):
    """``AveragedModel`` that keeps a pruned model's masks (see the module docstring)."""

    def update_parameters(self, model: nn.Module) -> None:
        # Same reparametrization first: AveragedModel pairs parameters and buffers by position.
        follow_pruning(self.module, model)
        super().update_parameters(model)  # a lerp of two equal masks leaves them bit for bit


def build_ema(model: nn.Module, decay: float = 0.999, ramp_steps: float = 2000.0) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and buffers), updated with ``ema.update_parameters(model)``."""
    return ExponentialMovingAverage(model, multi_avg_fn=ramped_ema(decay, ramp_steps), use_buffers=True)
