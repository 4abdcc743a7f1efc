"""Hooks into the training loop, for work that rides along with training (pruning schedules, probes).

A callback's ``state_dict`` is saved in every checkpoint and handed back to ``load_state_dict`` on
``--resume``, so a schedule continues where it stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yolov3.train.trainer import Trainer


class TrainerCallback:
    """Override what you need; every hook is a no-op by default."""

    def on_resume_start(self, trainer: Trainer) -> None:
        """Before ``resume=True`` loads ``last.pt`` into the model: where a callback changes the model's structure
        at fit start (parametrizations), it makes the same change here, so that the checkpoint's state fits."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (after a resume has restored the trainer and the callbacks)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before each epoch's first batch (0-based ``epoch``)."""

    def on_optimizer_step(self, trainer: Trainer, step: int) -> None:
        """After each optimizer step (and the EMA update); ``step`` counts optimizer steps from 1."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """After validation and before the checkpoint is written; ``metrics`` may be extended."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
