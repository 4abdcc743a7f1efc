"""Hooks into the training loop, for work that rides along with training (pruning schedules, probes).

Every hook gets a :class:`TrainingContext`: what a callback may read and act on (the model, its EMA, the
optimizer, the config, the run folder, the step and epoch), not the trainer itself. A callback's
``state_dict`` is saved in every checkpoint and handed back to ``load_state_dict`` on resume, so a schedule
continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from yolov3.models.yolo_head import model_yolo_heads
from yolov3.train.distributed import DistributedContext

if TYPE_CHECKING:
    from yolov3.models.yolo_head import YoloHeadSpec
    from yolov3.train.config import TrainConfig
    from yolov3.train.tensorboard import TrainingBoard


def _no_scale() -> float:
    return 1.0


@dataclass
class TrainingContext:
    """What callbacks see of a training run. The trainer keeps ``epoch``, ``step`` and ``start_epoch`` current.

    ``model`` is the trained model itself (never the DDP wrapper); ``ema`` the weight average (``None`` when
    ``train.ema`` is off), whose model is ``ema_model``; ``eval_model`` is what validation scores.
    ``gradient_scale()`` is the factor the backward pass applies to the loss (AMP loss scale / ``accumulate``),
    for callbacks that add to gradients.
    """

    model: nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    run_dir: Path
    class_names: tuple[str, ...]
    distributed: DistributedContext
    board: TrainingBoard
    total_steps: int
    gradient_scale: Callable[[], float] = _no_scale
    start_epoch: int = 0  # the first epoch this fit runs (> 0 after a resume)
    epoch: int = 0  # the current (0-based) epoch
    step: int = 0  # optimizer steps done

    @property
    def ema_model(self) -> nn.Module | None:
        return self.ema.module if self.ema is not None else None

    @property
    def eval_model(self) -> nn.Module:
        """The model validation scores: the EMA's when there is one, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def head_specs(self) -> Sequence[YoloHeadSpec]:
        return model_yolo_heads(self.model)

    @property
    def device(self) -> torch.device:
        return self.distributed.device

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that validates and writes files."""
        return self.distributed.is_main


class TrainerCallback:
    """Override what you need; every hook is a no-op by default."""

    def on_resume_start(self, context: TrainingContext) -> None:
        """Before a resume loads ``last.pt`` into the model: where a callback changes the model's structure
        at fit start (parametrizations), it makes the same change here, so that the checkpoint's state fits."""

    def on_fit_start(self, context: TrainingContext) -> None:
        """Before the first epoch (after a resume has restored the model, the optimizer and the callbacks)."""

    def on_epoch_start(self, context: TrainingContext, epoch: int) -> None:
        """Before each epoch's first batch (0-based ``epoch``)."""

    def on_optimizer_step(self, context: TrainingContext, step: int) -> None:
        """After each optimizer step (and the EMA update); ``step`` counts optimizer steps from 1."""

    def on_epoch_end(self, context: TrainingContext, epoch: int, metrics: dict[str, float]) -> None:
        """After validation and before the checkpoint is written; ``metrics`` may be extended."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
