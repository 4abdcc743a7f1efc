"""Pruning during training: a :class:`~yolov3.train.callbacks.TrainerCallback` that follows a pruning schedule.

``build_trainer(config, run_dir, callbacks=[GradualPruningCallback(PruningConfig(...))])`` prunes the trained model

- ``one_shot``: to the target when training starts (then training fine-tunes with the masks held);
- ``iterative``: at the start of epochs 0, E, 2E, ... (E = ``finetune_epochs``), one round each;
- ``gradual``: at optimizer steps t0, t0 + Δt, ..., end_step, along Zhu & Gupta's cubic.

Every pruning step calls :func:`~yolov3.compression.masks.prune_to_sparsity` with the scheduled sparsity,
which counts the masks already there: a resumed run (masks restored from ``last.pt``, the step count from the
runner) continues on schedule, and repeating a step changes nothing. After pruning, the masks are broadcast
from rank 0 under DDP (they are identical anyway: every rank ranks the same weights) and copied to the EMA.
The sparsity goes to TensorBoard (``prune/sparsity`` per pruning step, ``epoch/prune/sparsity`` per epoch).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from yolov3.compression.masks import prunable_layers, prune_to_sparsity, refresh_pruned_tensors, sparsity_report
from yolov3.compression.schedules import PruningConfig
from yolov3.train.callbacks import TrainerCallback, TrainingContext
from yolov3.train.ema import follow_pruning

logger = logging.getLogger(__name__)


class GradualPruningCallback(TrainerCallback):
    """Prunes the trained model (and its EMA) on the schedule of ``config`` (any of the three methods)."""

    def __init__(self, config: PruningConfig) -> None:
        self.config = config
        self.last_pruned_step = -1  # optimizer step of the last pruning (-1: none yet)
        self.sparsity = 0.0  # sparsity of the prunable convs after the last pruning
        self.history: list[tuple[int, float]] = []  # (optimizer step, sparsity) of every pruning

    # -- pruning --------------------------------------------------------------------------------------------

    def _target(self, sparsity: float) -> float | dict[str, float]:
        """The uniform ``sparsity``, or the per-layer budget scaled by the schedule's progress."""
        budget = self.config.layer_sparsity
        if not budget:
            return sparsity
        progress = sparsity / self.config.final_sparsity if self.config.final_sparsity > 0 else 1.0
        return {name: value * progress for name, value in budget.items()}

    def prune_to(self, context: TrainingContext, sparsity: float, step: int) -> None:
        """Prune the trained model (and its EMA) to ``sparsity``, and log it at optimizer step ``step``."""
        model = context.model
        layers = prunable_layers(model, self.config.skip)
        prune_to_sparsity(model, self._target(sparsity), self.config.scope, layers)
        if context.distributed.is_distributed:
            with torch.no_grad():
                for _, conv in layers:
                    mask = getattr(conv, "weight_mask", None)  # a buffer of the pruned convs
                    if isinstance(mask, torch.Tensor):
                        torch.distributed.broadcast(mask, src=0)
            refresh_pruned_tensors(model)
        if context.ema_model is not None:
            follow_pruning(context.ema_model, model)
        self.sparsity = sparsity_report(model, layers).sparsity
        self.last_pruned_step = step
        self.history.append((step, self.sparsity))
        context.board.scalars({"sparsity": self.sparsity}, step, prefix="prune/")
        logger.info(
            "pruned to %.2f%% sparsity at step %d (scheduled %.2f%%)", 100 * self.sparsity, step, 100 * sparsity
        )

    # -- hooks ----------------------------------------------------------------------------------------------

    def on_fit_start(self, context: TrainingContext) -> None:
        step = context.step  # > 0 after a resume, which restored the masks and this state
        if self.config.method == "one_shot" and self.last_pruned_step < 0:
            self.prune_to(context, self.config.target_sparsity, step)
        elif self.config.method == "gradual" and self.config.is_pruning_step(step) and step != self.last_pruned_step:
            self.prune_to(context, self.config.sparsity_at_step(step), step)
        else:
            refresh_pruned_tensors(context.model)  # a resumed pruned model: deep-copyable, up to date

    def on_epoch_start(self, context: TrainingContext, epoch: int) -> None:
        if self.config.method != "iterative":
            return
        epochs_per_round = max(1, self.config.finetune_epochs)
        if epoch % epochs_per_round == 0 and epoch // epochs_per_round < self.config.rounds:
            round_number = epoch // epochs_per_round + 1
            self.prune_to(context, self.config.sparsity_after_round(round_number), context.step)

    def on_optimizer_step(self, context: TrainingContext, step: int) -> None:
        if self.config.method == "gradual" and self.config.is_pruning_step(step):
            self.prune_to(context, self.config.sparsity_at_step(step), step)

    def on_epoch_end(self, context: TrainingContext, epoch: int, metrics: dict[str, float]) -> None:
        layers = prunable_layers(context.model, self.config.skip)
        metrics["prune/sparsity"] = sparsity_report(context.model, layers).sparsity

    # -- checkpoints ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The schedule position; the masks themselves are in the checkpoint's model state."""
        return {"last_pruned_step": self.last_pruned_step, "sparsity": self.sparsity, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_pruned_step = int(state.get("last_pruned_step", -1))
        self.sparsity = float(state.get("sparsity", 0.0))
        self.history = [(int(step), float(value)) for step, value in state.get("history", [])]
