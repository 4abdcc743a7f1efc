"""Checkpoints: the typed :class:`Checkpoint`, its files, and the model and generator states it carries.

Below ``train`` and ``inference`` (it needs only ``models`` and ``atomic``), so training writes what detection,
evaluation, export and the compression workflows read, without those importing the trainer.
"""

from yolov3.checkpoint.files import load_checkpoint, save_checkpoint
from yolov3.checkpoint.layout import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointError,
    ModelSpec,
    TrainingState,
)
from yolov3.checkpoint.model_state import load_model_state, model_from_checkpoint
from yolov3.checkpoint.rng import restore_rng_state, rng_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "ModelSpec",
    "TrainingState",
    "load_checkpoint",
    "load_model_state",
    "model_from_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]
