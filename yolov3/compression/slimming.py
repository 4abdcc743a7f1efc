"""Network slimming (Liu et al. 2017): an L1 penalty on batch-norm scales drives unneeded channels' gamma to zero.

Training with ``loss + strength * sum(|gamma|)`` adds ``strength * sign(gamma)`` to each gamma's gradient; the
channels whose gamma ends near zero are then removed by :func:`~yolov3.compression.structured.prune_channels`
with ``criterion="bn_gamma"``.

Where the penalty goes: into the backward pass, through a hook on each gamma (``Tensor.register_hook``), so the
optimizer sees it as part of the gradient, exactly like the loss term: gradient clipping, momentum, Adam's
moments and weight decay treat it as Liu et al.'s ``loss + lambda * sum|gamma|``. A callback's
``on_optimizer_step`` runs after the step, when the gradient has been used and cleared; a separate update of
gamma there would bypass the optimizer (wrong under momentum or Adam). Under the trainer the hook multiplies the
penalty by the AMP ``GradScaler``'s scale (the loss gradients it joins are scaled, and are unscaled later) and
divides it by ``accumulate`` (each micro-batch's loss is divided by it), so one optimizer step always sees
``strength * sign(gamma)``, whatever the mixed precision or accumulation. Under DDP every rank adds the same
penalty before the gradients are averaged.

Which gammas: by default those of the prunable convs (:func:`~yolov3.compression.structured.analyze_channels`),
the channels structured pruning can remove; shrinking the gammas of residual streams or heads would cost
accuracy for nothing. ``layers="all"`` penalizes every ``BatchNorm2d`` (any model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from yolov3.compression.structured import analyze_channels
from yolov3.train.callbacks import TrainerCallback, TrainingContext
from yolov3.train.step import StepRunner

logger = logging.getLogger(__name__)

LAYER_CHOICES = ("prunable", "all")


def slimming_scales(model: nn.Module, layers: str = "prunable") -> list[nn.Parameter]:
    """The batch-norm scales (gamma) the penalty applies to: of the prunable convs, or of every BatchNorm2d."""
    if layers == "prunable":
        graph = analyze_channels(model)
        modules = [graph.modules[index] for index in graph.prunable]
        return [module.bn.weight for module in modules if module.bn is not None]  # all: the others are locked
    if layers == "all":
        return [module.weight for module in model.modules() if isinstance(module, nn.BatchNorm2d) and module.affine]
    raise ValueError(f"layers must be one of {', '.join(LAYER_CHOICES)}; got {layers!r}")


def runner_gradient_scale(runner: StepRunner) -> Callable[[], float]:
    """The factor the penalty needs inside ``runner``'s backward: the AMP loss scale / ``accumulate``."""
    return runner.gradient_scale


class SlimmingPenalty:
    """Adds ``strength * gradient_scale() * sign(gamma)`` to the gradient of every gamma in ``scales``.

    ``attach()`` registers the hooks, ``detach()`` removes them. ``gradient_scale`` defaults to 1 (a plain
    ``loss.backward()``); see :func:`runner_gradient_scale` for a training step runner.
    """

    def __init__(
        self,
        scales: list[nn.Parameter],
        strength: float,
        gradient_scale: Callable[[], float] | None = None,
    ) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.scales, self.strength = scales, strength
        self.gradient_scale = gradient_scale or (lambda: 1.0)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, gamma: nn.Parameter) -> Callable[[torch.Tensor], torch.Tensor]:
        def add_penalty(gradient: torch.Tensor) -> torch.Tensor:
            return gradient + (self.strength * self.gradient_scale()) * torch.sign(gamma.detach())

        return add_penalty

    def attach(self) -> None:
        self.detach()
        self._handles = [gamma.register_hook(self._hook(gamma)) for gamma in self.scales]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def loss(self) -> torch.Tensor:
        """The penalty term itself, ``strength * sum(|gamma|)`` (for logging; its gradient is what the hooks add)."""
        return torch.as_tensor(self.strength * sum(gamma.abs().sum() for gamma in self.scales))  # 0 if no scales

    def statistics(self, small: float = 1e-2) -> dict[str, float]:
        """Mean ``|gamma|`` and the fraction of gammas below ``small`` in magnitude."""
        with torch.no_grad():
            values = torch.cat([gamma.detach().abs().flatten().float().cpu() for gamma in self.scales])
        return {"gamma_mean": float(values.mean()), "gamma_small_fraction": float((values < small).float().mean())}


class SlimmingCallback(TrainerCallback):
    """Sparsity training for network slimming: the penalty on the trained model, statistics every epoch.

    ``build_trainer(config, run_dir, callbacks=[SlimmingCallback(strength=1e-3)])``; each epoch's metrics (and
    TensorBoard) get ``slimming/gamma_mean`` and ``slimming/gamma_small_fraction`` (|gamma| < ``small``).
    """

    def __init__(self, strength: float = 1e-3, layers: str = "prunable", small: float = 1e-2) -> None:
        if layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {', '.join(LAYER_CHOICES)}; got {layers!r}")
        self.strength, self.layers, self.small = strength, layers, small
        self.penalty: SlimmingPenalty | None = None

    def on_fit_start(self, context: TrainingContext) -> None:
        if self.penalty is not None:
            self.penalty.detach()
        scales = slimming_scales(context.model, self.layers)
        self.penalty = SlimmingPenalty(scales, self.strength, context.gradient_scale)
        self.penalty.attach()
        logger.info("network slimming: L1 penalty %g on %d batch-norm scales", self.strength, len(scales))

    def on_epoch_end(self, context: TrainingContext, epoch: int, metrics: dict[str, float]) -> None:
        if self.penalty is not None:
            metrics.update({f"slimming/{name}": value for name, value in self.penalty.statistics(self.small).items()})

    def state_dict(self) -> dict[str, Any]:
        return {"strength": self.strength, "layers": self.layers}
