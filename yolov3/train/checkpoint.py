"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and Python primitives, so loading it runs no pickled code:

- ``model``: ``{"name": registered builder, "kwargs": builder arguments}`` and ``model_state``: the weights;
  ``ema_state``: the EMA weights (evaluation and ``best.pt`` use these when present). A pruned model's state
  holds ``<module>.weight_orig`` and ``<module>.weight_mask`` (``torch.nn.utils.prune``):
  :func:`load_model_state` re-creates that reparametrization from the keys before loading;
- ``class_names``, ``input_size`` (height, width) and ``preprocessing`` (how images were fed): what
  ``python -m yolov3.detect --weights best.pt`` needs;
- ``optimizer``, ``scheduler``, ``scaler``, ``epoch``, ``step``, ``best_map50``, ``rng``, ``config``: what
  ``--resume`` needs to continue a killed run exactly.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from yolov3.atomic import atomic_output
from yolov3.models import create_model

CHECKPOINT_FORMAT = "yolov3-checkpoint"
CHECKPOINT_VERSION = 1
# torch's weights_only unpickler says this when a file holds objects other than tensors and primitives.
UNSAFE_PICKLE_MARKER = "Weights only load failed"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (a killed run leaves the previous file intact)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **checkpoint}
    with atomic_output(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); errors name the file and what was wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if UNSAFE_PICKLE_MARKER in str(error):
            raise CheckpointError(
                f"{path}: not a checkpoint this library wrote: it holds arbitrary Python objects, "
                "and was not loaded because unpickling them could run code"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(error)})") from None
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(error)})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} file (no 'format' marker)")
    if checkpoint.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {checkpoint['version']} is newer than {CHECKPOINT_VERSION}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], use_ema: bool = True, keep_pruning: bool = False) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its (EMA, if present) weights.

    A pruned state's masks are made permanent (``prune.remove``: a plain model with exact zeros, ready for
    inference, BN fusion and export) unless ``keep_pruning``, which keeps the reparametrization to train on.
    """
    spec = checkpoint["model"]
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    state = checkpoint.get("ema_state") if use_ema and checkpoint.get("ema_state") is not None else None
    load_model_state(model, state if state is not None else checkpoint["model_state"])
    if not keep_pruning:
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    prune.remove(module, hook._tensor_name)
    return model


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state)`` (strict), for pruned states too.

    For every ``<module>.<tensor>_orig`` / ``<module>.<tensor>_mask`` pair in ``state`` that ``model`` does not
    yet have, the pruning reparametrization is created first (``prune.identity``, which keeps the parameter
    object, so an optimizer built on the model still holds it); after loading, pruned tensors are recomputed
    from ``orig * mask``, as the pruning pre-hooks would before a forward.
    """
    modules = dict(model.named_modules())
    for key in state:
        if not key.endswith("_mask") or f"{key.removesuffix('_mask')}_orig" not in state:
            continue
        module_name, _, tensor = key.removesuffix("_mask").rpartition(".")
        module = modules.get(module_name)
        if module is not None and not hasattr(module, f"{tensor}_orig"):
            prune.identity(module, tensor)
    model.load_state_dict(state)
    with torch.no_grad():
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    hook(module, ())  # weight = weight_orig * weight_mask, now


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch generator states in a ``weights_only``-safe form."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _first_line(error: BaseException) -> str:
    """``Type: first line`` of an exception, so a torch error stays one line in our message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants nested tuples; a checkpoint may hand back lists."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value
