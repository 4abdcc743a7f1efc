"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

A killed run leaves the previous file intact (:mod:`yolov3.atomic`); a file that holds arbitrary Python
objects is refused in one line, without unpickling them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from yolov3.atomic import atomic_output
from yolov3.checkpoint.layout import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Checkpoint, CheckpointError

# torch's weights_only unpickler says this when a file holds objects other than tensors and primitives.
UNSAFE_PICKLE_MARKER = "Weights only load failed"


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (a killed run leaves the previous file intact)."""
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"{path}: save_checkpoint takes a Checkpoint, got {type(checkpoint).__name__}")
    with atomic_output(path) as temporary:
        torch.save(checkpoint.to_dict(), temporary)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint safely (``weights_only=True``); errors name the file and what was wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if UNSAFE_PICKLE_MARKER in str(error):
            raise CheckpointError(
                f"{path}: not a checkpoint this library wrote: it holds arbitrary Python objects, "
                "and was not loaded because unpickling them could run code"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(error)})") from None
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} file (no 'format' marker)")
    version = payload.get("version", 0)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version!r} is newer than {CHECKPOINT_VERSION}")
    return Checkpoint.from_dict(payload, str(path))


def _first_line(error: BaseException) -> str:
    """``Type: first line`` of an exception, so a torch error stays one line in our message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
